// mambaout.h: the MambaOut family (Yu & Wang 2024) as the reference implementations define it:
// stem (conv → LN → act → conv → LN), four stages of Gated CNN blocks with conv+LN downsampling
// between them, mean pooling, LN and an MLP head (fc1 → GELU → LN → fc2). Channels-last throughout.
// Parameter names/order equal the official state_dict (downsample_layers.0.conv1.weight, ...,
// stages.2.5.fc1.bias, ..., head.fc2.bias). Config switches cover timm's rw variants (no stem norm1,
// LN-first downsampling, LayerScale, the norm_mlp head, SiLU, conv_ratio > 1). Hidden widths that are
// not multiples of 8 (mambaout_base) are stored padded; shapes seen from outside are the reference ones
// (GatedCNNBlock below).
#pragma once
#include <string>
#include <vector>

#include "nn/classifier.h"
#include "nn/layers.h"
#include "ops/activation/activation.h"

namespace mo::nn {

struct MambaOutConfig {
  std::string name = "mambaout_femto";
  std::vector<int64_t> depths{3, 3, 9, 3};
  std::vector<int64_t> dims{48, 96, 192, 288};
  double expansion_ratio = 8.0 / 3.0;
  double conv_ratio = 1.0;
  int kernel_size = 7;
  Act act = Act::gelu;
  bool stem_mid_norm = true;          // official: LN between the stem convs (rw: none)
  bool downsample_norm_first = false; // rw: LN(C_in) → conv, no LN after
  bool layer_scale = false;           // rw: γ per block, init 1e-5
  bool head_norm_mlp = false;         // rw: LN → fc → GELU → fc (no LN inside the MLP)
  double head_hidden_ratio = 4.0;
  int64_t num_classes = 1000;
  double drop_path_rate = 0.0;
  double head_dropout = 0.0;  // parsed like the reference; only 0 is supported (the recipe uses 0)
  // The hidden width h of every block is stored rounded up to a multiple of this (1: as is), with inert
  // zero channels (GatedCNNBlock); weights, checkpoints and counts stay in the reference layout.
  int64_t hidden_multiple = 8;
};

// Known names: mambaout_femto, _kobe, _tiny, _small, _base, _small_rw, _base_short_rw, _base_tall_rw,
// _base_wide_rw, _base_plus_rw, test_mambaout. Unknown -> error listing them.
MambaOutConfig mambaout_config(const std::string& name);
std::vector<std::string> mambaout_names();

// When h is not a multiple of cfg.hidden_multiple (mambaout_base: 341, 682, 1365), fc1, fc2 and the gate
// run on the padded width h' (344, 688, 1368): fc1's output z = [g' (h') | i' (h' − cc) | c (cc)] has
// zero rows of fc1.weight / fc1.bias at [h − cc, h' − cc) in g' and at the end of i', and fc2.weight zero
// columns at [h − cc, h' − cc), so that g'_j keeps its partner i_j or conv_j. Those m channels are
// act(0)·0 = 0, their gradients and fc1/fc2's exactly 0, so AdamW (m = v = 0, p = 0) and weight decay
// keep the pads 0 and every output equals the unpadded model's (up to summation order).
class GatedCNNBlock : public Module {
 public:
  GatedCNNBlock(int64_t dim, const MambaOutConfig& cfg, double drop_path, int block_index, Init& init);
  Tensor forward(const Tensor& x, uint64_t seed, uint64_t step) const;  // (B, H, W, C) -> same
  const char* type_name() const override { return "GatedCNNBlock"; }
  int64_t dim, hidden, conv_channels;
  int64_t stored_hidden;  // h' >= hidden: the width fc1/fc2 and the gate run on
  int kernel;
  double drop_path;
  int block_index;
  Act act;
  LayerNorm* norm;
  Linear *fc1, *fc2;
  Tensor *conv_weight, *conv_bias, *gamma;
};

class Stem : public Module {
 public:
  Stem(int64_t out, const MambaOutConfig& cfg, Init& init);
  Tensor forward(const Tensor& x) const;  // (B, H, W, 3) -> (B, H/4, W/4, out)
  const char* type_name() const override { return "Stem"; }
  Conv2d *conv1, *conv2;
  LayerNorm *norm1 = nullptr, *norm2;
  Act act;
};

class Downsample : public Module {
 public:
  Downsample(int64_t in, int64_t out, bool norm_first, Init& init);
  Tensor forward(const Tensor& x) const;
  const char* type_name() const override { return "Downsample"; }
  Conv2d* conv;
  LayerNorm* norm;
  bool norm_first;
};

class MlpHead : public Module {
 public:
  MlpHead(int64_t dim, int64_t hidden, int64_t classes, bool inner_norm, Init& init);
  Tensor forward(const Tensor& x) const;  // (B, dim) -> (B, classes)
  const char* type_name() const override { return "MlpHead"; }
  Linear *fc1, *fc2;
  LayerNorm* norm = nullptr;
};

class MambaOut : public Classifier {
 public:
  // init_seed keys the reference initialisation; initialize = false leaves weights at zero (fast,
  // for counting or before loading a checkpoint).
  explicit MambaOut(const MambaOutConfig& cfg, uint64_t init_seed = 0, bool initialize = true);
  // x: (B, 3, H, W) image batch (NCHW, like PyTorch). Returns logits (B, num_classes).
  Tensor forward(const Tensor& x) const;
  // Channels-last input (B, H, W, 3): skips the permute.
  Tensor forward_nhwc(const Tensor& x) const override;
  // Pooled features before the head (B, dims[3]) (used by tests and feature extraction).
  Tensor forward_features(const Tensor& x_nhwc) const;
  // Key for drop path: block b of step s uses Philox stream (s << 16 | b) under `seed`.
  void set_drop_path_key(uint64_t seed, uint64_t step) override {
    dp_seed_ = seed;
    dp_step_ = step;
  }
  const MambaOutConfig& config() const { return cfg_; }
  const char* type_name() const override { return "MambaOut"; }
  // Dotted names of the classifier's parameters (the head's last Linear, whose shape depends on
  // num_classes): what fine-tuning from weights for another number of classes starts afresh.
  std::vector<std::string> classifier_parameter_names() const override;

  std::vector<Module*> downsample_layers;  // [0] is the stem
  std::vector<std::vector<GatedCNNBlock*>> stages;
  LayerNorm* norm;
  MlpHead* head;

 private:
  MambaOutConfig cfg_;
  uint64_t dp_seed_ = 0, dp_step_ = 0;
};

// Drop-path rate of each block: linspace(0, rate, Σ depths).
std::vector<double> drop_path_schedule(const std::vector<int64_t>& depths, double rate);

}  // namespace mo::nn
