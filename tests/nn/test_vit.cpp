// test_vit.cpp: the ViT models (nn/vit.h): timm's parameter counts and state_dict names, the whole model
// (full and causal) against the plain-torch ViT of tests/reference/vit_ref.py on the same weights (logits,
// loss, every parameter gradient; float64 and float32), weight files round-tripping with timm's names,
// a few AdamW steps that fit a small batch, make_classifier (the engine's model by name), the MAC count walked from the model (mo_flops), and the errors.
#include <filesystem>
#include <fstream>

#include "nn/adamw.h"
#include "nn/classifier.h"
#include "nn/flops.h"
#include "nn/io/checkpoint_io.h"
#include "nn/vit.h"
#include "ops/loss/cross_entropy.h"
#include "tests/test_util.h"

using namespace mo;
using namespace mo::nn;
using mo::test::randn;

namespace {

const std::string kRef = std::string(MO_SOURCE_DIR) + "/tests/reference/vit_ref.py";

// timm's count, from its VisionTransformer definition (patch conv, cls_token, pos_embed, blocks of
// LN + qkv + proj + LN + fc1 + fc2, final LN, head).
int64_t timm_param_count(int64_t C, int64_t depth, int64_t img, int64_t patch, int64_t classes) {
  const int64_t N = (img / patch) * (img / patch), hidden = 4 * C;
  const int64_t block = 2 * C + (3 * C * C + 3 * C) + (C * C + C) + 2 * C + (C * hidden + hidden) + (hidden * C + C);
  return (C * 3 * patch * patch + C) + C + (N + 1) * C + depth * block + 2 * C + (C * classes + classes);
}

// A small ViT (16×16 images, 4×4 patches: 17 tokens, 2 blocks of width 48, 3 heads) with every parameter
// random (biases, LN and the class token included), so that no term of the gradient hides behind a zero.
VitConfig small_config(bool causal) {
  VitConfig c = vit_config("vit_tiny_patch4_32");
  c.img_size = 16, c.embed_dim = 48, c.depth = 2, c.num_classes = 10, c.causal = causal;
  return c;
}
void randomize(Module& m, uint64_t seed) {
  for (auto& [n, p] : m.named_parameters()) m.set_parameter(n, randn(p.shape(), seed++, DType::f32, 0.2));
}

}  // namespace

TEST(Vit, TimmParameterCountsAndNames) {
  EXPECT_EQ(timm_param_count(192, 12, 224, 16, 1000), 5717416);   // timm's vit_tiny_patch16_224
  EXPECT_EQ(timm_param_count(384, 12, 224, 16, 1000), 22050664);  // timm's vit_small_patch16_224
  for (const auto& name : vit_names()) {
    SCOPED_TRACE(name);
    const VitConfig c = vit_config(name);
    VisionTransformer m(c, 0, false);
    EXPECT_EQ(m.num_parameters(), timm_param_count(c.embed_dim, c.depth, c.img_size, c.patch_size, c.num_classes));
    auto named = m.named_parameters();
    ASSERT_EQ(named.size(), 4u + 12u * 12u + 4u);
    EXPECT_EQ(named[0].first, "cls_token");
    EXPECT_EQ(named[1].first, "pos_embed");
    EXPECT_EQ(named[2].first, "patch_embed.proj.weight");
    EXPECT_EQ(named[1].second.shape(), (Shape{1, m.num_tokens(), c.embed_dim}));
    EXPECT_EQ(named[4].first, "blocks.0.norm1.weight");
    EXPECT_EQ(named[6].first, "blocks.0.attn.qkv.weight");
    EXPECT_EQ(named[6].second.shape(), (Shape{3 * c.embed_dim, c.embed_dim}));
    EXPECT_EQ(named[8].first, "blocks.0.attn.proj.weight");
    EXPECT_EQ(named[12].first, "blocks.0.mlp.fc1.weight");
    EXPECT_EQ(named[15].first, "blocks.0.mlp.fc2.bias");
    EXPECT_EQ(named[named.size() - 3].first, "norm.bias");
    EXPECT_EQ(named.back().first, "head.bias");
  }
  EXPECT_EQ(VisionTransformer(vit_config("vit_tiny_patch4_32"), 0, false).num_tokens(), 65);
  EXPECT_EQ(VisionTransformer(vit_config("vit_tiny_patch2_32"), 0, false).num_tokens(), 257);
  EXPECT_EQ(VisionTransformer(vit_config("vit_small_patch16_224"), 0, false).num_tokens(), 197);
}

TEST(Vit, MatchesTorchReferenceFullAndCausal) {
  if (!mo::test::python_has_torch()) GTEST_SKIP() << "Debian's python3-torch is not installed";
  for (bool causal : {false, true})
    for (DType dt : {DType::f64, DType::f32}) {
      SCOPED_TRACE(testing::Message() << (causal ? "causal " : "full ") << dtype_name(dt));
      const std::string dir = mo::test::temp_dir("vit_parity");
      const VitConfig c = small_config(causal);
      VisionTransformer m(c, 3);
      randomize(m, 100);
      Tensor x = randn({3, 3, 16, 16}, 5), target = mo::test::rand_uniform({3, 10}, 6, 0.0, 1.0);
      for (auto& [n, p] : m.named_parameters()) mo::test::save_npy(dir + "/" + n + ".npy", p);
      mo::test::save_npy(dir + "/input.npy", x);
      mo::test::save_npy(dir + "/target.npy", target);
      std::ofstream(dir + "/config.txt") << "embed_dim=48\ndepth=2\nheads=3\npatch=4\nimg=16\nclasses=10\ncausal="
                                         << (causal ? 1 : 0) << "\n";
      ASSERT_EQ(mo::test::run_python(kRef, "model " + dir), 0);
      pack_parameters(m, Device::cpu(), dt);
      Tensor logits = m.forward(x.to(dt));
      Tensor loss = soft_target_cross_entropy(logits, target.to(dt));
      loss.backward();
      const double tol = dt == DType::f64 ? 1e-9 : 1e-4;
      EXPECT_TRUE(mo::test::all_close(logits, mo::test::load_npy(dir + "/logits.npy"), tol, "logits"));
      EXPECT_TRUE(mo::test::all_close(loss.view({1}), mo::test::load_npy(dir + "/loss.npy"), tol, "loss"));
      for (auto& [n, p] : m.named_parameters()) {
        ASSERT_TRUE(p.grad().defined()) << n;
        EXPECT_TRUE(mo::test::all_close(p.grad(), mo::test::load_npy(dir + "/grad/" + n + ".npy"), tol, n));
      }
      std::filesystem::remove_all(dir);
    }
}

TEST(Vit, WeightFilesKeepTimmNames) {
  VisionTransformer m(small_config(false), 7);
  randomize(m, 200);
  for (const char* file : {"vit.safetensors", "vit.pth"}) {
    const std::string path = mo::test::tmp_path(file);
    io::save_model(m, path);
    auto sd = io::load_state_dict_file(path);
    auto named = m.named_parameters();
    ASSERT_EQ(sd.size(), named.size());
    for (size_t i = 0; i < named.size(); ++i) EXPECT_EQ(sd[i].first, named[i].first);
    VisionTransformer again(small_config(true), 0, false);  // one file serves both attention modes
    io::LoadReport rep = io::load_into_model(again, path);
    EXPECT_EQ(rep.loaded, named.size());
    for (auto& [n, p] : named) EXPECT_EQ(again.parameter(n).to_vector<float>(), p.to_vector<float>()) << n;
  }
}

TEST(Vit, FewAdamWStepsFitASmallBatch) {
  for (bool causal : {false, true}) {
    VitConfig c = small_config(causal);
    c.drop_path_rate = 0.1;
    VisionTransformer m(c, 11);
    AdamWOptions o;
    o.lr = 1e-3;
    AdamW opt(m, Device::cpu(), DType::f32, o);
    Tensor x = randn({8, 3, 16, 16}, 12);
    std::vector<float> onehot(8 * 10, 0.0f);
    for (int b = 0; b < 8; ++b) onehot[b * 10 + (b * 3) % 10] = 1.0f;
    Tensor target = Tensor::from_vector(onehot, {8, 10});
    double first = 0, last = 0;
    for (int step = 0; step < 40; ++step) {
      m.set_drop_path_key(1, static_cast<uint64_t>(step));
      opt.zero_grad();
      Tensor loss = soft_target_cross_entropy(m.forward(x), target);
      loss.backward();
      opt.step(o.lr);
      (step == 0 ? first : last) = loss.item();
    }
    EXPECT_LT(last, 0.3 * first) << (causal ? "causal" : "full") << ": loss " << first << " -> " << last;
  }
}

TEST(Vit, WeightDecaySkipsWhatTimmSkips) {
  // timm: no decay for biases, 1-D parameters (LayerNorm) and VisionTransformer.no_weight_decay()
  VisionTransformer m(small_config(false), 0, false);
  for (auto& [n, p] : m.named_parameters()) {
    const bool want = n.find(".weight") != std::string::npos && n.find("norm") == std::string::npos;
    EXPECT_EQ(decays(n, p), want) << n;
  }
}

TEST(Vit, BadInputsAreNamed) {
  EXPECT_NE(mo::test::error_of([] { vit_config("vit_base_patch16_224"); }).find("vit_tiny_patch16_224"),
            std::string::npos);
  EXPECT_NE(mo::test::error_of([] { parse_attention_mode("casual"); }).find("model.attention: 'casual'"),
            std::string::npos);
  EXPECT_TRUE(parse_attention_mode("causal"));
  EXPECT_FALSE(parse_attention_mode("full"));
  VisionTransformer m(small_config(false), 1);
  EXPECT_NE(mo::test::error_of([&] { m.forward(Tensor::zeros({2, 3, 32, 32})); }).find("(B, 16, 16, 3)"),
            std::string::npos);
  VitConfig bad = small_config(false);
  bad.num_heads = 5;  // 48 % 5
  EXPECT_NE(mo::test::error_of([&] { VisionTransformer v(bad, 0, false); }).find("width 48 / heads 5"),
            std::string::npos);
}

TEST(Vit, MacCountFromTheModelAgreesWithEq6) {
  // per block 2·MACs = Eq. 6 at the model's L (197, with the class token); causal counts the L(L+1)/2
  // (query, key) pairs of the lower triangle, diagonal included: D·L(L+1)/2 per product
  for (bool causal : {false, true}) {
    VitConfig cfg = vit_config("vit_small_patch16_224");
    cfg.causal = causal;
    const VitCount c = count_vit(VisionTransformer(cfg, 0, false));
    const int64_t D = 384, L = 197;
    EXPECT_EQ(c.tokens, L);
    EXPECT_EQ(c.params, 22050664);
    EXPECT_EQ(c.qkv, L * D * 3 * D);
    EXPECT_EQ(c.mlp, 2 * L * D * 4 * D);
    EXPECT_EQ(c.qk, causal ? D * L * (L + 1) / 2 : D * L * L);
    EXPECT_EQ(c.av, c.qk);
    EXPECT_EQ(c.patch_embed, 196 * D * 3 * 16 * 16);
    EXPECT_EQ(c.head, D * 1000);
    EXPECT_EQ(c.total, c.patch_embed + 12 * c.per_block + c.head);
    const TransformerFlops f = transformer_flops({D, 12, L, causal});
    if (!causal) EXPECT_EQ(2 * c.per_block, f.per_block);
    else EXPECT_EQ(2 * c.per_block, f.per_block + 2 * D * L);  // + the diagonal, D·L per product
  }
  EXPECT_EQ(count_vit(VisionTransformer(vit_config("vit_small_patch16_224"), 0, false)).total, 4598882304);  // 4.6 G
}

TEST(Vit, MakeClassifierBuildsEitherFamilyByName) {
  auto v = make_classifier({"vit_tiny_patch4_32", 10, 0.1, "causal"}, 1, false);
  auto* vit = dynamic_cast<VisionTransformer*>(v.get());
  ASSERT_NE(vit, nullptr);
  EXPECT_TRUE(vit->config().causal);
  EXPECT_EQ(vit->config().num_classes, 10);
  EXPECT_EQ(vit->config().drop_path_rate, 0.1);
  EXPECT_EQ(v->classifier_parameter_names(), (std::vector<std::string>{"head.weight", "head.bias"}));
  EXPECT_EQ(v->forward_nhwc(Tensor::zeros({2, 32, 32, 3})).shape(), (Shape{2, 10}));
  auto m = make_classifier({"mambaout_femto", 7, 0.0, "full"}, 1, false);
  ASSERT_NE(dynamic_cast<MambaOut*>(m.get()), nullptr);
  EXPECT_EQ(m->classifier_parameter_names(), (std::vector<std::string>{"head.fc2.weight", "head.fc2.bias"}));
  const std::string unknown = mo::test::error_of([] { make_classifier({"vit_huge", 10, 0.0, "full"}, 1, false); });
  EXPECT_NE(unknown.find("unknown model 'vit_huge'"), std::string::npos) << unknown;
  EXPECT_NE(unknown.find("mambaout_femto"), std::string::npos) << unknown;
  EXPECT_NE(unknown.find("vit_tiny_patch4_32"), std::string::npos) << unknown;
  EXPECT_NE(mo::test::error_of([] { make_classifier({"mambaout_femto", 10, 0.0, "causal"}, 1, false); })
                .find("applies to ViT models only"),
            std::string::npos);
}
