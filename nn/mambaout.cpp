// mambaout.cpp: the MambaOut model: configs of every variant, the blocks and the forward pass.
#include "nn/mambaout.h"

#include <algorithm>

#include "ops/conv/dwconv2d.h"
#include "ops/elementwise/elementwise.h"
#include "ops/fused/gated_dwconv.h"
#include "ops/fused/gated_dwconv_linear.h"
#include "ops/fused/layer_norm_linear.h"
#include "ops/linear/linear.h"
#include "ops/reduce/mean_hw.h"
#include "ops/regularize/drop_path.h"
#include "ops/shape/shape.h"

namespace mo::nn {

MambaOutConfig mambaout_config(const std::string& name) {
  MambaOutConfig c;
  c.name = name;
  auto rw = [&](std::vector<int64_t> depths, double er, double cr, Act act) {
    c.depths = depths;
    c.dims = {128, 256, 512, 768};
    c.expansion_ratio = er;
    c.conv_ratio = cr;
    c.act = act;
    c.stem_mid_norm = false;
    c.downsample_norm_first = true;
    c.layer_scale = true;
    c.head_norm_mlp = true;
  };
  if (name == "mambaout_femto") {
    c.depths = {3, 3, 9, 3}, c.dims = {48, 96, 192, 288};
  } else if (name == "mambaout_kobe") {
    c.depths = {3, 3, 15, 3}, c.dims = {48, 96, 192, 288};
  } else if (name == "mambaout_tiny") {
    c.depths = {3, 3, 9, 3}, c.dims = {96, 192, 384, 576};
  } else if (name == "mambaout_small") {
    c.depths = {3, 4, 27, 3}, c.dims = {96, 192, 384, 576};
  } else if (name == "mambaout_base") {
    c.depths = {3, 4, 27, 3}, c.dims = {128, 256, 512, 768};
  } else if (name == "mambaout_small_rw") {
    rw({3, 4, 27, 3}, 8.0 / 3.0, 1.0, Act::gelu);
    c.dims = {96, 192, 384, 576};
  } else if (name == "mambaout_base_short_rw") {
    rw({3, 3, 25, 3}, 3.0, 1.25, Act::gelu);
  } else if (name == "mambaout_base_tall_rw") {
    rw({3, 4, 30, 3}, 2.5, 1.25, Act::gelu);
  } else if (name == "mambaout_base_wide_rw") {
    rw({3, 4, 27, 3}, 3.0, 1.5, Act::silu);
  } else if (name == "mambaout_base_plus_rw") {
    rw({3, 4, 30, 3}, 3.0, 1.5, Act::silu);
  } else if (name == "test_mambaout") {
    rw({1, 1, 3, 1}, 3.0, 1.0, Act::silu);
    c.dims = {16, 32, 48, 64};
  } else {
    MO_FAIL("unknown model '{}'; known: {}", name, fmt::join(mambaout_names(), ", "));
  }
  return c;
}

std::vector<std::string> mambaout_names() {
  return {"mambaout_femto",         "mambaout_kobe",         "mambaout_tiny",        "mambaout_small",
          "mambaout_base",          "mambaout_small_rw",     "mambaout_base_short_rw", "mambaout_base_tall_rw",
          "mambaout_base_wide_rw",  "mambaout_base_plus_rw", "test_mambaout"};
}

std::vector<double> drop_path_schedule(const std::vector<int64_t>& depths, double rate) {
  int64_t n = 0;
  for (auto d : depths) n += d;
  std::vector<double> r(n, 0.0);
  for (int64_t k = 0; k < n && n > 1; ++k) r[k] = rate * static_cast<double>(k) / static_cast<double>(n - 1);
  return r;
}

// ---------------------------------------------------------------------------------------------

GatedCNNBlock::GatedCNNBlock(int64_t d, const MambaOutConfig& cfg, double dp, int idx, Init& init)
    : dim(d),
      hidden(static_cast<int64_t>(cfg.expansion_ratio * static_cast<double>(d))),  // Python int(): truncation
      conv_channels(static_cast<int64_t>(cfg.conv_ratio * static_cast<double>(d))),
      stored_hidden(hidden),
      kernel(cfg.kernel_size),
      drop_path(dp),
      block_index(idx),
      act(cfg.act) {
  norm = &register_module("norm", std::make_unique<LayerNorm>(d));
  fc1 = &register_module("fc1", std::make_unique<Linear>(d, 2 * hidden, init));
  // "conv" holds the depthwise weight (cc, 1, k, k) and bias; registered as parameters of a child so
  // the names read stages.S.J.conv.weight / .bias like the reference.
  struct DwConv : Module {
    DwConv(int64_t cc, int k, Init& init) {
      w = &register_parameter("weight", init.trunc_normal({cc, 1, k, k}));
      b = &register_parameter("bias", Tensor::zeros({cc}));
    }
    const char* type_name() const override { return "DepthwiseConv2d"; }
    Tensor *w, *b;
  };
  auto& conv = register_module("conv", std::make_unique<DwConv>(conv_channels, kernel, init));
  conv_weight = conv.w;
  conv_bias = conv.b;
  fc2 = &register_module("fc2", std::make_unique<Linear>(hidden, d, init));
  gamma = nullptr;
  if (cfg.layer_scale) {
    struct LayerScale : Module {
      explicit LayerScale(int64_t d) { g = &register_parameter("gamma", Tensor::full({d}, 1e-5)); }
      const char* type_name() const override { return "LayerScale"; }
      Tensor* g;
    };
    gamma = register_module("ls", std::make_unique<LayerScale>(d)).g;
  }
  // Pad h to h' (mambaout.h). The reference values are drawn first, so a seeded model holds the same
  // weights as the unpadded one. Padding does not change results (beyond fp32 summation order), so it
  // applies on every device and the model's layout does not depend on where it runs: on the GPU it puts
  // cuBLASLt and the gate on their 16-byte paths; on the CPU its 0.2-0.9% more MACs are lost in the noise
  // (base's stage 1-3 blocks, batch 2 at 224², forward + backward, one thread: padded / unpadded CPU
  // time 0.99-1.04).
  const int64_t mult = std::max<int64_t>(cfg.hidden_multiple, 1), h = hidden, cc = conv_channels;
  MO_CHECK(cc <= h, "{}: {} conv channels exceed the hidden width {} (conv_ratio {} > expansion_ratio {})", cfg.name,
           cc, h, cfg.conv_ratio, cfg.expansion_ratio);
  if (h % mult != 0) {
    const int64_t hp = (h + mult - 1) / mult * mult;
    stored_hidden = hp;
    // z: g[:h−cc] | g[h−cc:] | i | c  ->  stored at 0 | h'−cc | h' | 2h'−cc
    const Padding z{0, {{0, 0, h - cc}, {h - cc, hp - cc, cc}, {h, hp, h - cc}, {2 * h - cc, 2 * hp - cc, cc}}};
    fc1->pad_parameter("weight", z, 2 * hp);
    fc1->pad_parameter("bias", z, 2 * hp);
    fc1->out_features = 2 * hp;
    // m (fc2's input): m[:h−cc] | m[h−cc:]  ->  0 | h'−cc
    fc2->pad_parameter("weight", Padding{1, {{0, 0, h - cc}, {h - cc, hp - cc, cc}}}, hp);
    fc2->in_features = hp;
  }
}

Tensor GatedCNNBlock::forward(const Tensor& x, uint64_t seed, uint64_t step) const {
  // fc1(norm(x)) as one node that recomputes the LN output in backward instead of keeping it
  Tensor z = layer_norm_linear(x, *norm->weight, *norm->bias, norm->eps, *fc1->weight,
                               fc1->bias ? *fc1->bias : Tensor());  // (B, H, W, 2h') = [g | i | c]
  if (!gamma && (drop_path == 0.0 || !is_training()))  // x + fc2(gate(z)) as one node that keeps no m; the
    return gated_dwconv_linear_residual(z, *conv_weight, *conv_bias, stored_hidden, act,  // add rides in fc2's
                                        *fc2->weight, fc2->bias ? *fc2->bias : Tensor(), x);  // epilogue
  Tensor m = gated_dwconv(z, *conv_weight, *conv_bias, stored_hidden, act);  // act(g) ⊙ [i, dwconv(c)]
  Tensor out = fc2->forward(m);                                          // (B, H, W, C)
  if (gamma) out = mul_channel(out, *gamma);
  out = mo::drop_path(out, drop_path, is_training(), seed, (step << 16) | static_cast<uint64_t>(block_index));
  return add(out, x);
}

Stem::Stem(int64_t out, const MambaOutConfig& cfg, Init& init) : act(cfg.act) {
  conv1 = &register_module("conv1", std::make_unique<Conv2d>(3, out / 2, 3, 2, 1, init));
  if (cfg.stem_mid_norm) norm1 = &register_module("norm1", std::make_unique<LayerNorm>(out / 2));
  conv2 = &register_module("conv2", std::make_unique<Conv2d>(out / 2, out, 3, 2, 1, init));
  norm2 = &register_module("norm2", std::make_unique<LayerNorm>(out));
}

Tensor Stem::forward(const Tensor& x) const {
  Tensor y = conv1->forward(x);
  if (norm1) y = norm1->forward(y);
  y = activation(y, act);
  y = conv2->forward(y);
  return norm2->forward(y);
}

Downsample::Downsample(int64_t in, int64_t out, bool nf, Init& init) : norm_first(nf) {
  if (nf) {
    norm = &register_module("norm", std::make_unique<LayerNorm>(in));
    conv = &register_module("conv", std::make_unique<Conv2d>(in, out, 3, 2, 1, init));
  } else {
    conv = &register_module("conv", std::make_unique<Conv2d>(in, out, 3, 2, 1, init));
    norm = &register_module("norm", std::make_unique<LayerNorm>(out));
  }
}

Tensor Downsample::forward(const Tensor& x) const {
  if (norm_first) return conv->forward(norm->forward(x));
  return norm->forward(conv->forward(x));
}

MlpHead::MlpHead(int64_t dim, int64_t hidden, int64_t classes, bool inner_norm, Init& init) {
  fc1 = &register_module("fc1", std::make_unique<Linear>(dim, hidden, init));
  if (inner_norm) norm = &register_module("norm", std::make_unique<LayerNorm>(hidden));
  fc2 = &register_module("fc2", std::make_unique<Linear>(hidden, classes, init));
}

Tensor MlpHead::forward(const Tensor& x) const {
  Tensor y = gelu(fc1->forward(x));  // the head always uses GELU (timm does not pass the model act)
  if (norm) y = norm->forward(y);
  return fc2->forward(y);
}

MambaOut::MambaOut(const MambaOutConfig& cfg, uint64_t init_seed, bool initialize) : cfg_(cfg) {
  MO_CHECK(cfg.depths.size() == 4 && cfg.dims.size() == 4, "{}: expected 4 depths and 4 dims", cfg.name);
  MO_CHECK(cfg.head_dropout == 0.0, "{}: head dropout {} is not supported (the reference recipe uses 0)", cfg.name,
           cfg.head_dropout);
  Init init{init_seed, 1, !initialize};
  auto& ds = register_module("downsample_layers", std::make_unique<ModuleList>());
  downsample_layers.push_back(&ds.add(std::make_unique<Stem>(cfg.dims[0], cfg, init)));
  for (int i = 1; i < 4; ++i)
    downsample_layers.push_back(&ds.add(std::make_unique<Downsample>(cfg.dims[i - 1], cfg.dims[i], cfg.downsample_norm_first, init)));
  auto rates = drop_path_schedule(cfg.depths, cfg.drop_path_rate);
  auto& st = register_module("stages", std::make_unique<ModuleList>());
  int k = 0;
  for (int s = 0; s < 4; ++s) {
    auto& stage = st.add(std::make_unique<ModuleList>());
    stages.emplace_back();
    for (int64_t j = 0; j < cfg.depths[s]; ++j, ++k)
      stages.back().push_back(&stage.add(std::make_unique<GatedCNNBlock>(cfg.dims[s], cfg, rates[k], k, init)));
  }
  norm = &register_module("norm", std::make_unique<LayerNorm>(cfg.dims[3]));
  auto hidden = static_cast<int64_t>(cfg.head_hidden_ratio * static_cast<double>(cfg.dims[3]));
  head = &register_module("head", std::make_unique<MlpHead>(cfg.dims[3], hidden, cfg.num_classes, !cfg.head_norm_mlp, init));
}

std::vector<std::string> MambaOut::classifier_parameter_names() const {
  std::vector<std::string> names;
  visit([&](const std::string& name, const Module& m) {
    if (&m != head->fc2) return;
    for (const auto& [p, t] : m.named_parameters(name + ".")) names.push_back(p);
  });
  return names;
}

Tensor MambaOut::forward_features(const Tensor& x_nhwc) const {
  Tensor x = static_cast<Stem*>(downsample_layers[0])->forward(x_nhwc);
  for (int s = 0; s < 4; ++s) {
    if (s > 0) x = static_cast<Downsample*>(downsample_layers[s])->forward(x);
    for (auto* blk : stages[s]) x = blk->forward(x, dp_seed_, dp_step_);
  }
  return norm->forward(mean_hw(x));
}

Tensor MambaOut::forward_nhwc(const Tensor& x) const {
  MO_CHECK(x.dim() == 4 && x.size(3) == 3, "{}: expected an image batch (B, H, W, 3), got {}", cfg_.name, x.str());
  Tensor p = parameters()[0];
  Tensor xin = x.device() == p.device() && x.dtype() == p.dtype() ? x : x.to(p.device()).to(p.dtype());
  return head->forward(forward_features(xin));
}

Tensor MambaOut::forward(const Tensor& x) const {
  MO_CHECK(x.dim() == 4 && x.size(1) == 3, "{}: expected an image batch (B, 3, H, W), got {}", cfg_.name, x.str());
  Tensor p = parameters()[0];
  Tensor xin = x.device() == p.device() && x.dtype() == p.dtype() ? x : x.to(p.device()).to(p.dtype());
  return head->forward(forward_features(nchw_to_nhwc(xin)));
}

}  // namespace mo::nn
