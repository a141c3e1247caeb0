// vit.cpp: the ViT presets, the pre-norm block and the forward pass (see vit.h).
#include "nn/vit.h"

#include "nn/mambaout.h"  // drop_path_schedule
#include "ops/activation/activation.h"
#include "ops/attention/attention.h"
#include "ops/elementwise/elementwise.h"
#include "ops/fused/layer_norm_linear.h"
#include "ops/linear/linear.h"
#include "ops/regularize/drop_path.h"
#include "ops/shape/shape.h"
#include "ops/shape/tokens.h"

namespace mo::nn {

namespace {

// A named container (timm's patch_embed, attn, mlp): children only, for the state_dict names.
class Group : public Module {
 public:
  explicit Group(const char* type) : type_(type) {}
  template <typename M>
  M& add(const std::string& name, std::unique_ptr<M> m) {
    return register_module(name, std::move(m));
  }
  const char* type_name() const override { return type_; }

 private:
  const char* type_;
};

}  // namespace

VitConfig vit_config(const std::string& name) {
  VitConfig c;
  c.name = name;
  if (name == "vit_tiny_patch16_224") {
    c.embed_dim = 192, c.num_heads = 3;
  } else if (name == "vit_small_patch16_224") {
    c.embed_dim = 384, c.num_heads = 6;
  } else if (name == "vit_tiny_patch4_32") {
    c.embed_dim = 192, c.num_heads = 3, c.img_size = 32, c.patch_size = 4;
  } else if (name == "vit_small_patch4_32") {
    c.embed_dim = 384, c.num_heads = 6, c.img_size = 32, c.patch_size = 4;
  } else if (name == "vit_tiny_patch2_32") {
    c.embed_dim = 192, c.num_heads = 3, c.img_size = 32, c.patch_size = 2;
  } else {
    MO_FAIL("unknown ViT '{}'; known: {}", name, fmt::join(vit_names(), ", "));
  }
  return c;
}

std::vector<std::string> vit_names() {
  return {"vit_tiny_patch16_224", "vit_small_patch16_224", "vit_tiny_patch4_32", "vit_small_patch4_32",
          "vit_tiny_patch2_32"};
}

bool is_vit_name(const std::string& name) {
  for (const auto& n : vit_names())
    if (n == name) return true;
  return false;
}

bool parse_attention_mode(const std::string& mode, const std::string& what) {
  if (mode == "full") return false;
  if (mode == "causal") return true;
  MO_FAIL("{}: '{}' is not an attention mode (full | causal)", what, mode);
}

VitBlock::VitBlock(int64_t d, int64_t h, int64_t hidden, bool c, double dp, int index, Init& init)
    : dim(d), heads(h), causal(c), drop_path(dp), block_index(index) {
  norm1 = &register_module("norm1", std::make_unique<LayerNorm>(d, 1e-6));
  auto& attn = register_module("attn", std::make_unique<Group>("Attention"));
  qkv = &attn.add("qkv", std::make_unique<Linear>(d, 3 * d, init));
  proj = &attn.add("proj", std::make_unique<Linear>(d, d, init));
  norm2 = &register_module("norm2", std::make_unique<LayerNorm>(d, 1e-6));
  auto& mlp = register_module("mlp", std::make_unique<Group>("Mlp"));
  fc1 = &mlp.add("fc1", std::make_unique<Linear>(d, hidden, init));
  fc2 = &mlp.add("fc2", std::make_unique<Linear>(hidden, d, init));
}

Tensor VitBlock::forward(const Tensor& x, uint64_t seed, uint64_t step) const {
  // x + attn(norm1(x)), then + mlp(norm2(·)); without drop path the residual adds ride in proj/fc2
  const bool dp = drop_path > 0.0 && is_training();
  auto branch = [&](const Tensor& y, int k) {  // drop path key: block b's two branches are streams 2b, 2b + 1
    return mo::drop_path(y, drop_path, true, seed, (step << 16) | static_cast<uint64_t>(2 * block_index + k));
  };
  Tensor a = attention(layer_norm_linear(x, *norm1->weight, *norm1->bias, norm1->eps, *qkv->weight, *qkv->bias), heads,
                       causal);  // (B, L, C)
  Tensor y = dp ? add(x, branch(proj->forward(a), 0)) : linear_residual(a, *proj->weight, *proj->bias, x);
  Tensor m = gelu(layer_norm_linear(y, *norm2->weight, *norm2->bias, norm2->eps, *fc1->weight, *fc1->bias));
  return dp ? add(y, branch(fc2->forward(m), 1)) : linear_residual(m, *fc2->weight, *fc2->bias, y);
}

VisionTransformer::VisionTransformer(const VitConfig& cfg, uint64_t init_seed, bool initialize) : cfg_(cfg) {
  MO_CHECK(cfg.img_size > 0 && cfg.patch_size > 0 && cfg.img_size % cfg.patch_size == 0 && cfg.embed_dim > 0 &&
               cfg.num_heads > 0 && cfg.embed_dim % cfg.num_heads == 0 && cfg.depth > 0 && cfg.num_classes > 0,
           "{}: image {} / patch {}, width {} / heads {}, depth {}, classes {} do not make a ViT", cfg.name,
           cfg.img_size, cfg.patch_size, cfg.embed_dim, cfg.num_heads, cfg.depth, cfg.num_classes);
  Init init{init_seed, 1, !initialize};
  const int64_t C = cfg.embed_dim;
  // timm's order: the root's own parameters first, then patch_embed, blocks, norm, head
  cls_token = &register_parameter("cls_token", init.trunc_normal({1, 1, C}, 1e-6));
  pos_embed = &register_parameter("pos_embed", init.trunc_normal({1, num_tokens(), C}, 0.02));
  auto& pe = register_module("patch_embed", std::make_unique<Group>("PatchEmbed"));
  const int p = static_cast<int>(cfg.patch_size);
  patch_embed = &pe.add("proj", std::make_unique<Conv2d>(3, C, p, p, 0, init));
  auto& bl = register_module("blocks", std::make_unique<ModuleList>());
  const auto rates = drop_path_schedule({cfg.depth}, cfg.drop_path_rate);
  const auto hidden = static_cast<int64_t>(static_cast<double>(C) * cfg.mlp_ratio);
  for (int i = 0; i < cfg.depth; ++i)
    blocks.push_back(&bl.add(std::make_unique<VitBlock>(C, cfg.num_heads, hidden, cfg.causal, rates[i], i, init)));
  norm = &register_module("norm", std::make_unique<LayerNorm>(C, 1e-6));
  head = &register_module("head", std::make_unique<Linear>(C, cfg.num_classes, init));
}

int64_t VisionTransformer::num_tokens() const {
  const int64_t side = cfg_.img_size / cfg_.patch_size;
  return side * side + 1;
}

Tensor VisionTransformer::forward_features(const Tensor& x) const {
  MO_CHECK(x.dim() == 4 && x.size(1) == cfg_.img_size && x.size(2) == cfg_.img_size && x.size(3) == 3,
           "{}: expected an image batch (B, {}, {}, 3) (the position embedding is for {}×{}), got {}", cfg_.name,
           cfg_.img_size, cfg_.img_size, cfg_.img_size, cfg_.img_size, x.str());
  Tensor t = patch_embed->forward(x);  // (B, h, w, C)
  const int64_t B = t.size(0), N = t.size(1) * t.size(2), C = t.size(3);
  t = class_token_embed(reshape(t, {B, N, C}), *cls_token, *pos_embed, cfg_.causal);  // (B, N + 1, C)
  for (auto* b : blocks) t = b->forward(t, dp_seed_, dp_step_);
  // LayerNorm is per token: normalising only the class token gives timm's norm(x)[:, cls]
  return norm->forward(select_token(t, cfg_.causal ? N : 0));
}

Tensor VisionTransformer::forward_nhwc(const Tensor& x) const {
  MO_CHECK(x.dim() == 4 && x.size(3) == 3, "{}: expected an image batch (B, H, W, 3), got {}", cfg_.name, x.str());
  const Tensor& p = *cls_token;
  Tensor xin = x.device() == p.device() && x.dtype() == p.dtype() ? x : x.to(p.device()).to(p.dtype());
  return head->forward(forward_features(xin));
}

Tensor VisionTransformer::forward(const Tensor& x) const {
  MO_CHECK(x.dim() == 4 && x.size(1) == 3, "{}: expected an image batch (B, 3, H, W), got {}", cfg_.name, x.str());
  const Tensor& p = *cls_token;
  Tensor xin = x.device() == p.device() && x.dtype() == p.dtype() ? x : x.to(p.device()).to(p.dtype());
  return head->forward(forward_features(nchw_to_nhwc(xin)));
}

}  // namespace mo::nn
