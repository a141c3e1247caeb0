// vit.h: the Vision Transformer (Dosovitskiy et al. 2021) as timm's VisionTransformer defines its
// vit_tiny/small presets: patch-embedding conv, class token, learned position embedding, pre-norm blocks
// (LN → MHSA with qkv bias → LN → GELU MLP of ratio 4), LayerNorm eps 1e-6, final LN, linear head on the
// class token. Parameter names, order and counts equal timm's state_dict (cls_token, pos_embed,
// patch_embed.proj.*, blocks.i.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}.*, norm.*, head.*).
// causal = true (the MambaOut paper's "causal mode", its Fig. 3b): token t attends to tokens ≤ t in raster
// order, and the class token goes last instead of first: first, it would see only itself and the head
// would get no image at all; last, it sees every patch, as in full attention, and the weights (names,
// shapes, the class token's pos_embed row 0) stay timm's, so one checkpoint loads in either mode.
#pragma once
#include <string>
#include <vector>

#include "nn/classifier.h"
#include "nn/layers.h"

namespace mo::nn {

struct VitConfig {
  std::string name = "vit_tiny_patch16_224";
  int64_t img_size = 224, patch_size = 16, embed_dim = 192, depth = 12, num_heads = 3;
  double mlp_ratio = 4.0;
  int64_t num_classes = 1000;
  double drop_path_rate = 0.0;
  bool causal = false;  // model.attention: full | causal
};

// Known names: vit_tiny_patch16_224, vit_small_patch16_224, vit_tiny_patch4_32, vit_small_patch4_32 (32×32
// inputs in 4×4 patches, 64 tokens + the class token), vit_tiny_patch2_32 (2×2 patches: 256 + 1 tokens, for
// docs/causal_vs_full.md's harder setting). Unknown -> error listing them.
VitConfig vit_config(const std::string& name);
std::vector<std::string> vit_names();
bool is_vit_name(const std::string& name);
// "full" -> false, "causal" -> true; anything else is an error naming `what` (e.g. the recipe key).
bool parse_attention_mode(const std::string& mode, const std::string& what = "model.attention");

class VitBlock : public Module {
 public:
  VitBlock(int64_t dim, int64_t heads, int64_t hidden, bool causal, double drop_path, int block_index, Init& init);
  Tensor forward(const Tensor& x, uint64_t seed, uint64_t step) const;  // (B, L, C) -> same
  const char* type_name() const override { return "VitBlock"; }
  int64_t dim, heads;
  bool causal;
  double drop_path;
  int block_index;
  LayerNorm *norm1, *norm2;
  Linear *qkv, *proj, *fc1, *fc2;  // attn.qkv, attn.proj, mlp.fc1, mlp.fc2
};

class VisionTransformer : public Classifier {
 public:
  // init_seed keys timm's initialisation (Linear/conv trunc_normal 0.02, pos_embed trunc_normal 0.02,
  // cls_token normal 1e-6, biases 0); initialize = false leaves zeros (counting, or before loading).
  explicit VisionTransformer(const VitConfig& cfg, uint64_t init_seed = 0, bool initialize = true);
  Tensor forward(const Tensor& x) const;       // (B, 3, H, W) -> logits (B, num_classes)
  Tensor forward_nhwc(const Tensor& x) const override;  // (B, H, W, 3) -> logits
  Tensor forward_features(const Tensor& x_nhwc) const;  // the normed class token (B, embed_dim)
  void set_drop_path_key(uint64_t seed, uint64_t step) override {
    dp_seed_ = seed;
    dp_step_ = step;
  }
  const VitConfig& config() const { return cfg_; }
  const char* type_name() const override { return "VisionTransformer"; }
  std::vector<std::string> classifier_parameter_names() const override { return {"head.weight", "head.bias"}; }
  int64_t num_tokens() const;  // patches + the class token

  Tensor *cls_token, *pos_embed;
  Conv2d* patch_embed;  // patch_embed.proj
  std::vector<VitBlock*> blocks;
  LayerNorm* norm;
  Linear* head;

 private:
  VitConfig cfg_;
  uint64_t dp_seed_ = 0, dp_step_ = 0;
};

}  // namespace mo::nn
