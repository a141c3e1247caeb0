// flops.h: compute counts behind mo_flops (tools/mo_flops.cpp is only the command line).
// 1. Transformer blocks by the MambaOut paper's Eq. 6 (one multiply or one add = 1 FLOP; per block
//    24·D²·L + 4·D·L², softmax/norms/activations/biases ignored; causal attention halves the L² term),
//    with the ViT presets the paper discusses.
// 3. mo's ViT (nn/vit.h): multiply-accumulates walked from the model's own layers, for comparison with
//    Eq. 6 (2 FLOPs per MAC): per block the qkv/proj/fc1/fc2 Linears on L tokens and the attention map
//    (Q·Kᵀ and A·V: L² products of width D, causal L(L+1)/2: the lower triangle with its diagonal), plus
//    the patch-embedding conv and the head on the class token. Norms, softmax, GELU, biases: not counted.
// 2. MambaOut models: parameters and multiply-accumulates counted by walking the project's own model
//    (nn/mambaout.h) in forward order, tracking the spatial size through every stride-2 conv. Counted:
//    every Conv2d, depthwise conv and Linear (MACs); optionally LayerNorm by the fvcore convention
//    (5 FLOPs per element of an affine LN). Not counted: activations, the gating product, residual adds,
//    LayerScale, mean pooling (as in fvcore/timm's published numbers).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "nn/mambaout.h"
#include "nn/vit.h"

namespace mo::nn {

// ---- Transformers (Eq. 6) ---------------------------------------------------------------------

struct TransformerShape {
  int64_t dim = 0;     // D, channels
  int64_t depth = 1;   // number of blocks
  int64_t tokens = 0;  // L, sequence length
  bool causal = false;  // causal mask: only the lower triangle of QKᵀ and AV is computed
};

struct TransformerFlops {
  TransformerShape shape;
  // Per block, in FLOPs.
  int64_t qkv = 0;        // Q, K, V projections: 6·D²·L
  int64_t qk = 0;         // attention map Q·Kᵀ: 2·D·L² (causal: D·L²)
  int64_t av = 0;         // A·V: 2·D·L² (causal: D·L²)
  int64_t proj = 0;       // output projection: 2·D²·L
  int64_t mlp = 0;        // fc1 D→4D and fc2 4D→D: 16·D²·L
  int64_t linear = 0;     // qkv + proj + mlp = 24·D²·L
  int64_t quadratic = 0;  // qk + av = 4·D·L² (causal: 2·D·L²)
  int64_t per_block = 0;  // linear + quadratic
  int64_t total = 0;      // per_block · depth
  double ratio = 0;       // quadratic / linear = L / (6D) (causal: L / (12D))
  int64_t threshold = 0;  // τ: the L at which ratio = 1 (6D; causal: 12D); L > τ is "long-sequence"
};

// Throws mo::Error for non-positive sizes or counts that overflow 64 bits.
TransformerFlops transformer_flops(const TransformerShape& s);

struct VitPreset {
  std::string name;  // "vit-s", ...
  int64_t dim, depth, img, patch;
};
// vit-ti, vit-s, vit-b, vit-l, vit-h (D 192/384/768/1024/1280, depth 12/12/12/24/32, 224², patch 16; vit-h 14).
const std::vector<VitPreset>& vit_presets();
// nullptr when `name` is not a preset.
const VitPreset* find_vit_preset(const std::string& name);
// Tokens of an img_h × img_w image cut into patch × patch squares (each side must be a multiple of the
// patch), plus one for a class token.
int64_t vit_tokens(int64_t img_h, int64_t img_w, int64_t patch, bool cls_token);

// ---- MambaOut (walked from the model) --------------------------------------------------------

struct MacCount {
  int64_t conv = 0;    // MACs of the dense and depthwise convolutions
  int64_t linear = 0;  // MACs of the Linear layers
  int64_t norm = 0;    // LayerNorm FLOPs by the fvcore convention (5 per element)
  int64_t total(bool count_norm) const { return conv + linear + (count_norm ? norm : 0); }
  MacCount& operator+=(const MacCount& o) {
    conv += o.conv, linear += o.linear, norm += o.norm;
    return *this;
  }
};

// One row of the per-stage table: "stem", "stage 1" (its blocks), "stage 2".."stage 4" (downsampling
// + blocks), "head" (final LN + MLP head on the pooled features).
struct PartCount {
  std::string name;
  int64_t params = 0;
  MacCount macs;
  int64_t out_c = 0, out_h = 0, out_w = 0;  // output of this part (head: classes × 1 × 1)
};

struct ModelCount {
  std::string arch;
  int64_t img_h = 0, img_w = 0;
  std::vector<PartCount> parts;
  int64_t params = 0;
  MacCount macs;
};

// Walks `m` in forward order for an img_h × img_w input. The parts' parameters add up to
// m.num_parameters(); a module holding parameters of a type it cannot count is an error. Parameters and
// MACs are the reference model's: the zero channels mo adds to mambaout_base's hidden widths (mambaout.h)
// are not counted (they add 0.9% / 0.9% / 0.2% to the fc1/fc2 MACs of stages 1-3).
ModelCount count_mambaout(const MambaOut& m, int64_t img_h, int64_t img_w);

// ---- ViT (walked from the model) -------------------------------------------------------------
struct VitCount {
  std::string arch;
  int64_t dim = 0, depth = 0, tokens = 0, params = 0;
  bool causal = false;
  int64_t qkv = 0, qk = 0, av = 0, proj = 0, mlp = 0, per_block = 0;  // MACs of one block
  int64_t patch_embed = 0, head = 0;  // MACs outside the blocks
  int64_t total = 0;                  // patch_embed + Σ blocks + head
};
VitCount count_vit(const VisionTransformer& m);

}  // namespace mo::nn
