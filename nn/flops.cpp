// flops.cpp: Eq. 6 for Transformer blocks and the MAC/parameter walk over a MambaOut model.
#include "nn/flops.h"

#include <string_view>

namespace mo::nn {

namespace {

// a·b, refusing to wrap around (huge custom shapes).
int64_t mul(int64_t a, int64_t b) {
  int64_t r = 0;
  MO_CHECK(!__builtin_mul_overflow(a, b, &r), "count overflows 64 bits ({} x {})", a, b);
  return r;
}
int64_t mul(std::initializer_list<int64_t> xs) {
  int64_t r = 1;
  for (int64_t x : xs) r = mul(r, x);
  return r;
}
int64_t add(int64_t a, int64_t b) {
  int64_t r = 0;
  MO_CHECK(!__builtin_add_overflow(a, b, &r), "count overflows 64 bits ({} + {})", a, b);
  return r;
}

}  // namespace

// ---- Transformers -----------------------------------------------------------------------------

TransformerFlops transformer_flops(const TransformerShape& s) {
  MO_CHECK(s.dim > 0, "transformer: dim must be positive, got {}", s.dim);
  MO_CHECK(s.depth > 0, "transformer: depth must be positive, got {}", s.depth);
  MO_CHECK(s.tokens > 0, "transformer: tokens must be positive, got {}", s.tokens);
  const int64_t D = s.dim, L = s.tokens;
  const int64_t d2l = mul({D, D, L}), dl2 = mul({D, L, L});
  TransformerFlops f;
  f.shape = s;
  f.qkv = mul(6, d2l);                      // 3 projections D→D: 3 · 2·D²·L
  f.qk = s.causal ? dl2 : mul(2, dl2);      // L×L scores, each a length-D dot product (2D FLOPs)
  f.av = s.causal ? dl2 : mul(2, dl2);      // L×D outputs, each a length-L dot product
  f.proj = mul(2, d2l);                     // D→D
  f.mlp = mul(16, d2l);                     // D→4D and 4D→D: 8·D²·L each
  f.linear = add(add(f.qkv, f.proj), f.mlp);
  f.quadratic = add(f.qk, f.av);
  f.per_block = add(f.linear, f.quadratic);
  f.total = mul(f.per_block, s.depth);
  f.ratio = static_cast<double>(f.quadratic) / static_cast<double>(f.linear);
  f.threshold = mul(s.causal ? 12 : 6, D);  // 4DL² = 24D²L at L = 6D (causal: 2DL² at L = 12D)
  return f;
}

const std::vector<VitPreset>& vit_presets() {
  static const std::vector<VitPreset> presets = {{"vit-ti", 192, 12, 224, 16},
                                                 {"vit-s", 384, 12, 224, 16},
                                                 {"vit-b", 768, 12, 224, 16},
                                                 {"vit-l", 1024, 24, 224, 16},
                                                 {"vit-h", 1280, 32, 224, 14}};
  return presets;
}

const VitPreset* find_vit_preset(const std::string& name) {
  for (const auto& p : vit_presets())
    if (p.name == name) return &p;
  return nullptr;
}

int64_t vit_tokens(int64_t img_h, int64_t img_w, int64_t patch, bool cls_token) {
  MO_CHECK(patch > 0, "transformer: patch must be positive, got {}", patch);
  MO_CHECK(img_h > 0 && img_w > 0, "transformer: image size must be positive, got {}x{}", img_h, img_w);
  MO_CHECK(img_h % patch == 0 && img_w % patch == 0, "transformer: image {}x{} is not a multiple of patch {}", img_h,
           img_w, patch);
  return add(mul(img_h / patch, img_w / patch), cls_token ? 1 : 0);
}

// ---- MambaOut ---------------------------------------------------------------------------------

namespace {

// Activation shape while walking in forward order: channels-last (h, w, c); h = w = 1 after pooling.
struct Walk {
  int64_t h, w, c;
};

// Counts the leaf layers of `root` (depth first = registration order, which is the forward order inside
// every MambaOut module). Returns the parameters held by the leaves it counted.
int64_t count_module(const Module& root, const std::string& name, Walk& st, MacCount& mc) {
  int64_t leaf_params = 0;
  root.visit(
      [&](const std::string& sub, const Module& mod) {
        const std::string where = sub.empty() ? name : name + "." + sub;
        const std::string_view type = mod.type_name();
        const int64_t tokens = mul(st.h, st.w);
        if (type == "Conv2d") {
          const auto& c = dynamic_cast<const Conv2d&>(mod);
          MO_CHECK(c.in_channels == st.c, "{}: Conv2d expects {} input channels but the walk has {}", where,
                   c.in_channels, st.c);
          const int64_t ho = (st.h + 2 * c.pad - c.kernel) / c.stride + 1;
          const int64_t wo = (st.w + 2 * c.pad - c.kernel) / c.stride + 1;
          MO_CHECK(ho > 0 && wo > 0, "{}: input {}x{} is too small for a {}x{} conv", where, st.h, st.w, c.kernel,
                   c.kernel);
          mc.conv = add(mc.conv, mul({ho, wo, c.out_channels, c.in_channels, c.kernel, c.kernel}));
          st = {ho, wo, c.out_channels};
        } else if (type == "DepthwiseConv2d") {
          // weight (cc, 1, k, k); stride 1, padding k/2: the spatial size is kept.
          const Shape ws = mod.parameter("weight").shape();
          MO_CHECK(ws.size() == 4 && ws[1] == 1 && ws[2] == ws[3], "{}: unexpected depthwise weight {}", where,
                   shape_str(ws));
          mc.conv = add(mc.conv, mul({tokens, ws[0], ws[2], ws[3]}));
        } else if (type == "Linear") {
          // the reference layer (out, in): a width the model stores padded (mambaout.h) counts as in timm
          const Shape ws = mod.reference_shape("weight");
          mc.linear = add(mc.linear, mul({tokens, ws[1], ws[0]}));
          st.c = ws[0];
        } else if (type == "LayerNorm") {
          const auto& n = dynamic_cast<const LayerNorm&>(mod);
          MO_CHECK(n.dim == st.c, "{}: LayerNorm over {} channels but the walk has {}", where, n.dim, st.c);
          mc.norm = add(mc.norm, mul({5, tokens, n.dim}));  // fvcore: 5 FLOPs per element (affine)
        } else if (type == "LayerScale") {
          // per-channel scale: elementwise, not counted
        } else {
          return;  // a container: its leaves are visited next
        }
        leaf_params += mod.num_parameters();
      },
      "");
  MO_CHECK(leaf_params == root.num_parameters(),
           "{}: holds {} parameters but only {} sit in layers mo_flops can count (a new layer type?)", name,
           root.num_parameters(), leaf_params);
  return leaf_params;
}

}  // namespace

ModelCount count_mambaout(const MambaOut& m, int64_t img_h, int64_t img_w) {
  const MambaOutConfig& cfg = m.config();
  MO_CHECK(img_h > 0 && img_w > 0, "{}: image size must be positive, got {}x{}", cfg.name, img_h, img_w);
  ModelCount out;
  out.arch = cfg.name;
  out.img_h = img_h;
  out.img_w = img_w;
  Walk st{img_h, img_w, 3};
  auto part = [&](const std::string& label, const std::vector<std::pair<std::string, const Module*>>& mods) {
    PartCount p;
    p.name = label;
    for (const auto& [name, mod] : mods) p.params += count_module(*mod, name, st, p.macs);
    p.out_c = st.c, p.out_h = st.h, p.out_w = st.w;
    out.params += p.params;
    out.macs += p.macs;
    out.parts.push_back(std::move(p));
  };
  // Forward order (MambaOut::forward_features): stem, then per stage its downsampling and blocks,
  // mean pooling over H, W, the final LN and the head.
  part("stem", {{"downsample_layers.0", m.downsample_layers[0]}});
  for (size_t s = 0; s < m.stages.size(); ++s) {
    std::vector<std::pair<std::string, const Module*>> mods;
    if (s > 0) mods.emplace_back(fmt::format("downsample_layers.{}", s), m.downsample_layers[s]);
    for (size_t j = 0; j < m.stages[s].size(); ++j) mods.emplace_back(fmt::format("stages.{}.{}", s, j), m.stages[s][j]);
    part(fmt::format("stage {}", s + 1), mods);
  }
  st.h = st.w = 1;  // mean over H, W
  part("head", {{"norm", m.norm}, {"head", m.head}});
  MO_CHECK(out.params == m.num_parameters(), "{}: the walk saw {} of the model's {} parameters", cfg.name, out.params,
           m.num_parameters());
  return out;
}

// ---- ViT ---------------------------------------------------------------------------------------

VitCount count_vit(const VisionTransformer& m) {
  const VitConfig& cfg = m.config();
  VitCount c;
  c.arch = cfg.name, c.dim = cfg.embed_dim, c.depth = static_cast<int64_t>(m.blocks.size()), c.causal = cfg.causal;
  c.tokens = m.num_tokens(), c.params = m.num_parameters();
  const int64_t L = c.tokens, patches = L - 1;
  const Conv2d& pe = *m.patch_embed;
  c.patch_embed = mul({patches, pe.out_channels, pe.in_channels, pe.kernel, pe.kernel});
  const int64_t pairs = cfg.causal ? mul(L, L + 1) / 2 : mul(L, L);  // (query, key) products per head
  c.total = c.patch_embed;
  for (const VitBlock* b : m.blocks) {
    auto lin = [&](const Linear* l) { return mul({L, l->in_features, l->out_features}); };
    c.qkv = lin(b->qkv), c.proj = lin(b->proj), c.mlp = add(lin(b->fc1), lin(b->fc2));
    c.qk = c.av = mul(pairs, b->dim);  // heads × head dim = dim
    c.per_block = add(add(c.qkv, c.proj), add(c.mlp, add(c.qk, c.av)));
    c.total = add(c.total, c.per_block);
  }
  c.head = mul(m.head->in_features, m.head->out_features);  // the class token only
  c.total = add(c.total, c.head);
  return c;
}

}  // namespace mo::nn
