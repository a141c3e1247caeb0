// test_padding.cpp: hidden widths stored padded to a multiple of 8 (nn/mambaout.h, GatedCNNBlock):
// mambaout_base's shapes and exact timm count; a small model with unaligned widths against the same
// model built unpadded (hidden_multiple = 1): the same initial weights, the same logits and gradients,
// pad gradients exactly 0; AdamW steps keep the pads exactly 0; optimizer state exported per parameter
// (what .mo checkpoints store) has the reference shapes and imports back bit for bit.
#include "nn/adamw.h"
#include "nn/mambaout.h"
#include "ops/loss/cross_entropy.h"
#include "tests/test_util.h"

using namespace mo;
using namespace mo::nn;
using mo::test::error_of;

namespace {

// Two small models whose every hidden width is unaligned: femto-like (h = 42, 106, 149, 170; cc = dim)
// and rw-like (LayerScale, LN-first downsampling, conv_ratio 1.25: h = 53, 101, 138, 181; cc = 25, 47,
// 65, 85, so that the i/conv boundary h' − cc is unaligned too).
std::vector<MambaOutConfig> unaligned_configs() {
  MambaOutConfig a = mambaout_config("mambaout_femto");
  a.name = "pad_test_femto";
  a.depths = {1, 1, 2, 1};
  a.dims = {16, 40, 56, 64};
  a.num_classes = 10;
  MambaOutConfig b = mambaout_config("mambaout_base_tall_rw");
  b.name = "pad_test_rw";
  b.depths = {1, 1, 1, 1};
  b.dims = {20, 38, 52, 68};
  b.expansion_ratio = 8.0 / 3.0;
  b.num_classes = 10;
  return {a, b};
}

MambaOutConfig unpadded(MambaOutConfig c) {
  c.hidden_multiple = 1;
  return c;
}

// The entries of `stored` (laid out like parameter `name`) that hold no reference value: the pads.
std::vector<float> pad_values(const Module& m, const std::string& name, const Tensor& stored) {
  const auto covered = m.from_reference(name, Tensor::full(m.reference_shape(name), 1.0)).to_vector<float>();
  const auto all = stored.contiguous().to_vector<float>();
  EXPECT_EQ(covered.size(), all.size()) << name;
  std::vector<float> pads;
  for (size_t i = 0; i < all.size() && i < covered.size(); ++i)
    if (covered[i] == 0.0f) pads.push_back(all[i]);
  return pads;
}

int64_t expect_pads_zero(const Module& m, const std::string& name, const Tensor& stored, const std::string& what) {
  int64_t n = 0;
  for (float v : pad_values(m, name, stored)) {
    EXPECT_EQ(v, 0.0f) << what << " " << name;
    ++n;
  }
  return n;
}

}  // namespace

TEST(Padding, BaseStoresAlignedWidthsAndCountsLikeTimm) {
  MambaOut m(mambaout_config("mambaout_base"), 0, /*initialize=*/false);
  const int64_t want_h[] = {344, 688, 1368, 2048}, dims[] = {128, 256, 512, 768};
  int64_t pads = 0;
  for (int s = 0; s < 4; ++s) {
    const GatedCNNBlock& b = *m.stages[s][0];
    EXPECT_EQ(b.stored_hidden, want_h[s]) << s;
    // what the CUDA paths need: z's row 2h', g'/i' boundary h', the i'/conv boundary h' − cc and c's
    // offset 2h' − cc are multiples of 8 elements (16 bytes in bf16)
    for (int64_t v : {b.stored_hidden, b.stored_hidden - b.conv_channels, 2 * b.stored_hidden - b.conv_channels})
      EXPECT_EQ(v % 8, 0) << s;
    const std::string p = "stages." + std::to_string(s) + ".0.";
    EXPECT_EQ(m.parameter(p + "fc1.weight").shape(), (Shape{2 * want_h[s], dims[s]}));
    EXPECT_EQ(m.parameter(p + "fc1.bias").shape(), (Shape{2 * want_h[s]}));
    EXPECT_EQ(m.parameter(p + "fc2.weight").shape(), (Shape{dims[s], want_h[s]}));
    EXPECT_EQ(m.reference_shape(p + "fc1.weight"), (Shape{2 * b.hidden, dims[s]}));
    EXPECT_EQ(m.reference_shape(p + "fc2.weight"), (Shape{dims[s], b.hidden}));
    EXPECT_EQ(m.padding_of(p + "fc1.weight") != nullptr, s < 3) << s;
    pads += (want_h[s] - b.hidden) * (3 * dims[s] + 2) * static_cast<int64_t>(m.stages[s].size());
  }
  EXPECT_EQ(m.num_parameters(), 84813092);  // mambaout.md §1.1, timm's count
  int64_t stored = 0, exported = 0;
  for (const auto& [n, t] : m.named_parameters()) stored += t.numel();
  for (const auto& [n, t] : m.reference_parameters()) exported += t.numel();
  EXPECT_EQ(exported, 84813092);
  EXPECT_EQ(stored, 84813092 + pads);
  EXPECT_EQ(pads, 146532);  // 3·386·3 + 6·770·4 + 3·1538·27
  // Unpadded, the stored shapes are the reference ones; no other model of the family is padded.
  MambaOut plain(unpadded(mambaout_config("mambaout_base")), 0, false);
  EXPECT_EQ(plain.parameter("stages.0.0.fc1.weight").shape(), (Shape{682, 128}));
  EXPECT_EQ(plain.num_parameters(), 84813092);
  for (const auto& name : mambaout_names()) {
    if (name == "mambaout_base") continue;
    MambaOut other(mambaout_config(name), 0, false);
    for (const auto& [n, t] : other.named_parameters()) EXPECT_EQ(other.padding_of(n), nullptr) << name << " " << n;
  }
}

TEST(Padding, SameWeightsLogitsAndGradientsAsTheUnpaddedModel) {
  for (const MambaOutConfig& cfg : unaligned_configs()) {
    SCOPED_TRACE(cfg.name);
    MambaOut pad(cfg, 21), ref(unpadded(cfg), 21);
    int blocks = 0, padded = 0;
    for (auto& stage : pad.stages)
      for (auto* b : stage) ++blocks, padded += b->stored_hidden != b->hidden;
    EXPECT_EQ(padded, blocks);  // every block of these configs is unaligned
    // The same initial weights, bit for bit, in the reference layout; the pads are 0.
    auto a = pad.reference_parameters(), b = ref.named_parameters();
    ASSERT_EQ(a.size(), b.size());
    int64_t pads = 0;
    for (size_t k = 0; k < a.size(); ++k) {
      EXPECT_EQ(a[k].first, b[k].first);
      EXPECT_EQ(a[k].second.to_vector<float>(), b[k].second.to_vector<float>()) << a[k].first;
      pads += expect_pads_zero(pad, a[k].first, pad.parameter(a[k].first), "initial");
    }
    EXPECT_GT(pads, 0);
    EXPECT_EQ(pad.num_parameters(), ref.num_parameters());
    // Non-trivial biases, so that the pads are not the only zeros around.
    for (auto& [n, t] : ref.named_parameters())
      if (n.find("fc1.bias") != std::string::npos) {
        Tensor v = mo::test::randn(t.shape(), 7 + t.numel(), DType::f32, 0.1);
        t.copy_(v);
        pad.set_parameter(n, v);  // the reference shape, padded on the way in
      }
    Tensor x = mo::test::randn({2, 3, 40, 40}, 3);
    Tensor target = mo::test::rand_uniform({2, 10}, 4, 0.0, 1.0);
    Tensor la = pad.forward(x), lb = ref.forward(x);
    EXPECT_TRUE(mo::test::all_close(la, lb, 1e-5, "logits"));
    soft_target_cross_entropy(la, target).backward();
    soft_target_cross_entropy(lb, target).backward();
    for (auto& [n, p] : pad.named_parameters()) {
      ASSERT_TRUE(p.grad().defined()) << n;
      EXPECT_TRUE(mo::test::all_close(pad.to_reference(n, p.grad()), ref.parameter(n).grad(), 1e-4, n));
      expect_pads_zero(pad, n, p.grad(), "gradient");
    }
  }
}

TEST(Padding, AdamWStepsKeepThePadsZero) {
  MambaOutConfig cfg = unaligned_configs()[0];
  MambaOut pad(cfg, 8), ref(unpadded(cfg), 8);
  const AdamWOptions o{1e-2, 0.9, 0.999, 1e-8, 0.05};  // a large lr and weight decay: pads would show
  AdamW oa(pad, Device::cpu(), DType::f32, o), ob(ref, Device::cpu(), DType::f32, o);
  Tensor y = smooth_one_hot(Tensor::from_vector<int64_t>({1, 4, 9}, {3}), 10, 0.1);
  for (int step = 0; step < 3; ++step) {
    Tensor x = mo::test::randn({3, 3, 32, 32}, 50 + step);
    oa.zero_grad();
    ob.zero_grad();
    soft_target_cross_entropy(pad.forward(x), y).backward();
    soft_target_cross_entropy(ref.forward(x), y).backward();
    oa.step(1e-2, 0.5);
    ob.step(1e-2, 0.5);
  }
  for (size_t k = 0; k < oa.slots().size(); ++k) {
    const AdamW::Slot& s = oa.slots()[k];
    const AdamW::Slot& r = ob.slots()[k];
    ASSERT_EQ(s.name, r.name);
    EXPECT_EQ(s.reference_shape, r.shape) << s.name;
    for (const auto& [what, flat] : {std::pair{"master", oa.master()}, std::pair{"exp_avg", oa.exp_avg()},
                                     std::pair{"exp_avg_sq", oa.exp_avg_sq()}}) {
      Tensor view = flat.as_strided(s.shape, contiguous_strides(s.shape), flat.offset() + s.offset);
      expect_pads_zero(pad, s.name, view, what);
    }
    EXPECT_EQ(oa.export_slot(oa.master(), s).shape(), r.shape) << s.name;
    // Adam divides by sqrt(v): summation-order differences in tiny gradients (the GEMMs block K = h and
    // the padded h' differently) grow. After 3 steps at lr 1e-2 the worst parameter measured 8.4e-5 with
    // the scalar kernels, 1.2e-4 with AVX2 and 2.1e-4 with AVX-512 (rounding differs per ISA), hence 5e-4.
    EXPECT_TRUE(mo::test::all_close(oa.export_slot(oa.master(), s), ob.export_slot(ob.master(), r), 5e-4, s.name));
  }
  // The compute weights the model runs on are the master's: pads 0 there too.
  for (auto& [n, p] : pad.named_parameters()) expect_pads_zero(pad, n, p, "weights");

  // Checkpoint path (tools/engine/trainer.cpp): export every slot in the reference layout, import into
  // a fresh optimizer, and the stored buffers are identical bit for bit.
  MambaOut again(cfg, 99);
  AdamW oc(again, Device::cpu(), DType::f32, o);
  for (size_t k = 0; k < oa.slots().size(); ++k) {
    const AdamW::Slot& s = oa.slots()[k];
    oc.import_slot(oc.master(), oc.slots()[k], oa.export_slot(oa.master(), s).contiguous());
    oc.import_slot(oc.exp_avg(), oc.slots()[k], oa.export_slot(oa.exp_avg(), s).contiguous());
    oc.import_slot(oc.exp_avg_sq(), oc.slots()[k], oa.export_slot(oa.exp_avg_sq(), s).contiguous());
  }
  EXPECT_EQ(oc.master().to_vector<float>(), oa.master().to_vector<float>());
  EXPECT_EQ(oc.exp_avg().to_vector<float>(), oa.exp_avg().to_vector<float>());
  EXPECT_EQ(oc.exp_avg_sq().to_vector<float>(), oa.exp_avg_sq().to_vector<float>());
  // A checkpoint tensor in the stored (padded) shape is refused, naming the parameter and both shapes.
  const AdamW::Slot* slot = nullptr;
  for (const auto& s : oc.slots())
    if (s.name == "stages.0.0.fc1.weight") slot = &s;
  ASSERT_NE(slot, nullptr);
  const AdamW::Slot& fc1 = *slot;
  ASSERT_NE(again.padding_of(fc1.name), nullptr) << fc1.name;
  std::string e = error_of([&] { oc.import_slot(oc.master(), fc1, Tensor::zeros(fc1.shape)); });
  EXPECT_NE(e.find(fc1.name), std::string::npos) << e;
  EXPECT_NE(e.find(shape_str(fc1.reference_shape)), std::string::npos) << e;
  // eps = 0 would make every pad 0/0 = NaN on the first step: refused.
  MambaOut z(cfg, 1);
  e = error_of([&] { AdamW(z, Device::cpu(), DType::f32, {1e-3, 0.9, 0.999, 0.0, 0.05}); });
  EXPECT_NE(e.find("AdamW: eps must be > 0, got 0"), std::string::npos) << e;
}

TEST(Padding, LayoutErrorsNameTheParameter) {
  MambaOut m(unaligned_configs()[0], 0, false);
  const std::string w = "stages.0.0.fc1.weight";  // reference (84, 16), stored (96, 16)
  ASSERT_EQ(m.reference_shape(w), (Shape{84, 16}));
  ASSERT_EQ(m.parameter(w).shape(), (Shape{96, 16}));
  std::string e = error_of([&] { m.set_parameter(w, Tensor::zeros({90, 16})); });
  EXPECT_NE(e.find("'stages.0.0.fc1.weight': model expects shape [84, 16] but got [90, 16]"), std::string::npos) << e;
  e = error_of([&] { m.to_reference(w, Tensor::zeros({84, 16})); });
  EXPECT_NE(e.find("stored shape [96, 16]"), std::string::npos) << e;
  e = error_of([&] { m.from_reference(w, Tensor::zeros({96, 16})); });
  EXPECT_NE(e.find("reference shape [84, 16]"), std::string::npos) << e;
  // A value in the stored shape is taken without its pads (they stay zero).
  m.set_parameter(w, Tensor::full({96, 16}, 2.0));
  int64_t pads = 0;
  for (float v : pad_values(m, w, m.parameter(w))) {
    EXPECT_EQ(v, 0.0f);
    ++pads;
  }
  EXPECT_EQ(pads, 12 * 16);
  for (float v : m.to_reference(w, m.parameter(w)).to_vector<float>()) EXPECT_EQ(v, 2.0f);
  // Bad run tables are refused before anything is stored.
  struct One : Module {
    One() { register_parameter("w", Tensor::zeros({4, 3})); }
  } one;
  e = error_of([&] { one.pad_parameter("w", Padding{0, {{0, 0, 2}, {1, 4, 3}}}, 8); });
  EXPECT_NE(e.find("do not cover the reference axis once"), std::string::npos) << e;
  e = error_of([&] { one.pad_parameter("w", Padding{0, {{0, 0, 2}, {2, 1, 2}}}, 8); });
  EXPECT_NE(e.find("overlap"), std::string::npos) << e;
  e = error_of([&] { one.pad_parameter("w", Padding{0, {{0, 0, 4}}}, 3); });
  EXPECT_NE(e.find("stored size 3 < reference size 4"), std::string::npos) << e;
  e = error_of([&] { one.pad_parameter("v", Padding{0, {{0, 0, 4}}}, 8); });
  EXPECT_NE(e.find("no parameter 'v'"), std::string::npos) << e;
  EXPECT_EQ(one.parameter("w").shape(), (Shape{4, 3}));
  one.pad_parameter("w", Padding{1, {{0, 1, 3}}}, 4);  // a zero column in front
  EXPECT_EQ(one.parameter("w").shape(), (Shape{4, 4}));
  EXPECT_EQ(one.num_parameters(), 12);
}
