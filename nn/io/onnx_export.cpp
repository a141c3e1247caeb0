// onnx_export.cpp: the MambaOut and ViT graphs in ONNX (see onnx_export.h): a small graph builder
// (initializers, nodes, attributes) and the model walks that mirror nn/mambaout.cpp and nn/vit.cpp layer
// by layer.
#include "nn/io/onnx_export.h"

#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <variant>

#include "autograd/check.h"
#include "nn/io/onnx.pb.h"

namespace mo::nn::io {
namespace {

namespace fs = std::filesystem;
using Ints = std::vector<int64_t>;

// IEEE binary32 -> binary16, round to nearest even; overflow -> ±inf, NaN stays NaN.
uint16_t float_to_half(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t absx = x & 0x7fffffffu;
  if (absx >= 0x7f800000u) return static_cast<uint16_t>(sign | 0x7c00u | (absx > 0x7f800000u ? 0x200u : 0u));
  if (absx >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds past 65504
  if (absx < 0x38800000u) {  // below the smallest normal half: a subnormal (or zero)
    const float scaled = std::bit_cast<float>(absx) * 16777216.0f;  // 2^24: units of the smallest subnormal
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(std::nearbyint(scaled)));
  }
  uint32_t mant = absx + 0xc8000fffu + ((absx >> 13) & 1u);  // rebias exponent (−112 << 23), round half even
  return static_cast<uint16_t>(sign | (mant >> 13));
}

struct Attr {
  std::string name;
  std::variant<int64_t, float, Ints> value;
};

// Appends nodes and initializers to one GraphProto; value names are unique by construction (each
// node output is `<scope>.<what>`).
class GraphBuilder {
 public:
  GraphBuilder(onnx::GraphProto& g, OnnxDType dt) : g_(g), fp16_(dt == OnnxDType::fp16) {}

  int32_t elem_type() const { return fp16_ ? onnx::TensorProto::FLOAT16 : onnx::TensorProto::FLOAT; }

  // A float initializer from a model tensor, in the export dtype; `shape` empty keeps the tensor's.
  std::string weight(const std::string& name, const Tensor& t, Ints shape = {}, bool transpose2d = false) {
    Tensor c = t.cpu().to(DType::f32).contiguous();
    std::vector<float> v(c.data<float>(), c.data<float>() + c.numel());
    Ints dims = shape.empty() ? Ints(c.shape().begin(), c.shape().end()) : shape;
    if (transpose2d) {  // (out, in) -> (in, out), for MatMul(x, W^T)
      MO_CHECK(c.dim() == 2, "onnx export: {} is not a matrix", name);
      const int64_t r = c.size(0), k = c.size(1);
      std::vector<float> tv(v.size());
      for (int64_t i = 0; i < r; ++i)
        for (int64_t j = 0; j < k; ++j) tv[j * r + i] = v[i * k + j];
      v.swap(tv);
      dims = {k, r};
    }
    return floats(name, v, dims);
  }
  std::string floats(const std::string& name, const std::vector<float>& v, const Ints& dims) {
    onnx::TensorProto* t = g_.add_initializer();
    t->set_name(name);
    for (int64_t d : dims) t->add_dims(d);
    t->set_data_type(elem_type());
    std::string raw;
    if (fp16_) {
      raw.resize(v.size() * 2);
      for (size_t i = 0; i < v.size(); ++i) {
        MO_CHECK(!(std::fabs(v[i]) > 65504.0f), "onnx export: {} holds {} at element {}, beyond float16's range "
                 "(65504): export it as fp32", name, v[i], i);
        uint16_t h = float_to_half(v[i]);
        std::memcpy(raw.data() + 2 * i, &h, 2);
      }
    } else {
      raw.assign(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
    }
    t->set_raw_data(std::move(raw));
    return name;
  }
  std::string scalar(const std::string& name, float v) { return floats(name, {v}, {}); }
  std::string int64s(const std::string& name, const Ints& v) {
    onnx::TensorProto* t = g_.add_initializer();
    t->set_name(name);
    t->add_dims(static_cast<int64_t>(v.size()));
    t->set_data_type(onnx::TensorProto::INT64);
    t->set_raw_data(std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(int64_t)));
    return name;
  }

  // One node; returns its outputs (named `name` or `name:k`).
  std::vector<std::string> node(const std::string& op, const std::string& name, const std::vector<std::string>& in,
                                const std::vector<Attr>& attrs = {}, int outputs = 1) {
    onnx::NodeProto* n = g_.add_node();
    n->set_op_type(op);
    n->set_name(name);
    for (const auto& s : in) n->add_input(s);
    std::vector<std::string> out;
    for (int k = 0; k < outputs; ++k) out.push_back(outputs == 1 ? name : fmt::format("{}:{}", name, k));
    for (const auto& s : out) n->add_output(s);
    for (const auto& a : attrs) {
      onnx::AttributeProto* p = n->add_attribute();
      p->set_name(a.name);
      if (auto* i = std::get_if<int64_t>(&a.value)) {
        p->set_type(onnx::AttributeProto::INT);
        p->set_i(*i);
      } else if (auto* f = std::get_if<float>(&a.value)) {
        p->set_type(onnx::AttributeProto::FLOAT);
        p->set_f(*f);
      } else {
        p->set_type(onnx::AttributeProto::INTS);
        for (int64_t v : std::get<Ints>(a.value)) p->add_ints(v);
      }
    }
    return out;
  }
  std::string op(const std::string& op, const std::string& name, const std::vector<std::string>& in,
                 const std::vector<Attr>& attrs = {}) {
    return node(op, name, in, attrs)[0];
  }

  // Shared constants (created once).
  std::string constant(float v) {
    std::string name = fmt::format("const.{}", v);
    for (const auto& t : g_.initializer())
      if (t.name() == name) return name;
    return scalar(name, v);
  }

 private:
  onnx::GraphProto& g_;
  bool fp16_;
};

// The model walks: every helper takes and returns value names; `p` is the module's dotted name.
class ModelGraph {
 public:
  ModelGraph(GraphBuilder& b) : b_(b) {}

  std::string to_nhwc(const std::string& x, const std::string& p) {
    return b_.op("Transpose", p + ".to_nhwc", {x}, {{"perm", Ints{0, 2, 3, 1}}});
  }
  std::string to_nchw(const std::string& x, const std::string& p) {
    return b_.op("Transpose", p + ".to_nchw", {x}, {{"perm", Ints{0, 3, 1, 2}}});
  }
  // LayerNorm over the last (channel) axis.
  std::string layer_norm(const std::string& x, const LayerNorm& ln, const std::string& p) {
    return b_.op("LayerNormalization", p,
                 {x, b_.weight(p + ".weight", *ln.weight), b_.weight(p + ".bias", *ln.bias)},
                 {{"axis", int64_t{-1}}, {"epsilon", static_cast<float>(ln.eps)}});
  }
  // y = x W^T + b on the last axis of a tensor of any rank; the reference layout (a padded hidden width,
  // nn/mambaout.h, is exported unpadded).
  std::string linear(const std::string& x, const Linear& l, const std::string& p) {
    Tensor w = l.to_reference("weight", *l.weight);
    std::string y = b_.op("MatMul", p + ".matmul", {x, b_.weight(p + ".weight_t", w, {}, true)});
    if (!l.bias) return y;
    return b_.op("Add", p, {y, b_.weight(p + ".bias", l.to_reference("bias", *l.bias))});
  }
  // NCHW conv; `group` 1 for dense.
  std::string conv(const std::string& x, const Tensor& w, const Tensor& bias, int stride, int pad, int64_t group,
                   const std::string& p) {
    const int64_t k = w.size(2);
    return b_.op("Conv", p, {x, b_.weight(p + ".weight", w), b_.weight(p + ".bias", bias)},
                 {{"kernel_shape", Ints{k, k}},
                  {"strides", Ints{stride, stride}},
                  {"pads", Ints{pad, pad, pad, pad}},
                  {"dilations", Ints{1, 1}},
                  {"group", group}});
  }
  // Channels-last dense conv of an nn::Conv2d.
  std::string conv_nhwc(const std::string& x, const Conv2d& c, const std::string& p) {
    return to_nhwc(conv(to_nchw(x, p), *c.weight, *c.bias, c.stride, c.pad, 1, p), p);
  }
  // gelu(x) = 0.5 x (1 + erf(x / √2)); silu(x) = x σ(x)
  std::string act(const std::string& x, Act a, const std::string& p) {
    if (a == Act::silu) return b_.op("Mul", p + ".silu", {x, b_.op("Sigmoid", p + ".sigmoid", {x})});
    std::string e = b_.op("Erf", p + ".erf", {b_.op("Mul", p + ".scaled", {x, b_.constant(0.70710678118654752f)})});
    std::string one_plus = b_.op("Add", p + ".one_plus", {e, b_.constant(1.0f)});
    return b_.op("Mul", p + ".gelu", {b_.op("Mul", p + ".x_cdf", {x, one_plus}), b_.constant(0.5f)});
  }

  std::string stem(const std::string& x, const Stem& s, const std::string& p) {
    std::string y = to_nhwc(conv(x, *s.conv1->weight, *s.conv1->bias, s.conv1->stride, s.conv1->pad, 1, p + ".conv1"),
                            p + ".conv1");
    if (s.norm1) y = layer_norm(y, *s.norm1, p + ".norm1");
    y = act(y, s.act, p + ".act");
    y = conv_nhwc(y, *s.conv2, p + ".conv2");
    return layer_norm(y, *s.norm2, p + ".norm2");
  }
  std::string downsample(const std::string& x, const Downsample& d, const std::string& p) {
    if (d.norm_first) return conv_nhwc(layer_norm(x, *d.norm, p + ".norm"), *d.conv, p + ".conv");
    return layer_norm(conv_nhwc(x, *d.conv, p + ".conv"), *d.norm, p + ".norm");
  }
  // x + fc2(act(g) ⊙ concat(i, dwconv(c))), [g | i | c] = fc1(LN(x)), widths h, h − cc, cc
  std::string block(const std::string& x, const GatedCNNBlock& blk, const std::string& p) {
    std::string z = linear(layer_norm(x, *blk.norm, p + ".norm"), *blk.fc1, p + ".fc1");
    const int64_t h = blk.hidden, cc = blk.conv_channels;
    MO_CHECK(cc > 0 && cc <= h, "onnx export: {} has {} conv channels for {} hidden", p, cc, h);
    std::string g, c, mixed;
    if (cc == h) {  // no identity part
      auto parts = b_.node("Split", p + ".split", {z, b_.int64s(p + ".split_sizes", {h, cc})}, {{"axis", int64_t{-1}}}, 2);
      g = parts[0], c = parts[1];
    } else {
      auto parts =
          b_.node("Split", p + ".split", {z, b_.int64s(p + ".split_sizes", {h, h - cc, cc})}, {{"axis", int64_t{-1}}}, 3);
      g = parts[0], c = parts[2];
      mixed = parts[1];
    }
    std::string conv_out = to_nhwc(
        conv(to_nchw(c, p + ".conv"), *blk.conv_weight, *blk.conv_bias, 1, blk.kernel / 2, cc, p + ".conv"), p + ".conv");
    mixed = mixed.empty() ? conv_out : b_.op("Concat", p + ".concat", {mixed, conv_out}, {{"axis", int64_t{-1}}});
    std::string m = b_.op("Mul", p + ".gate", {act(g, blk.act, p + ".act"), mixed});
    std::string y = linear(m, *blk.fc2, p + ".fc2");
    if (blk.gamma) y = b_.op("Mul", p + ".ls", {y, b_.weight(p + ".ls.gamma", *blk.gamma)});
    return b_.op("Add", p + ".residual", {y, x});
  }
  // (B, C) -> logits; the head always uses GELU, as in nn/mambaout.cpp.
  std::string head(const std::string& x, const MlpHead& h, const std::string& p) {
    std::string y = act(linear(x, *h.fc1, p + ".fc1"), Act::gelu, p + ".act");
    if (h.norm) y = layer_norm(y, *h.norm, p + ".norm");
    return linear(y, *h.fc2, p + ".fc2");
  }

  std::string mambaout(const std::string& input, const MambaOut& m) {
    std::string x = stem(input, *static_cast<const Stem*>(m.downsample_layers[0]), "downsample_layers.0");
    for (int s = 0; s < 4; ++s) {
      if (s > 0)
        x = downsample(x, *static_cast<const Downsample*>(m.downsample_layers[s]), fmt::format("downsample_layers.{}", s));
      for (size_t j = 0; j < m.stages[s].size(); ++j) x = block(x, *m.stages[s][j], fmt::format("stages.{}.{}", s, j));
    }
    x = b_.op("ReduceMean", "pool", {x}, {{"axes", Ints{1, 2}}, {"keepdims", int64_t{0}}});  // (B, C)
    return head(layer_norm(x, *m.norm, "norm"), *m.head, "head");
  }

  // x + proj(softmax(Q·Kᵀ/√D [+ mask])·V), [Q | K | V] = qkv(LN(x)); then x + fc2(gelu(fc1(LN(x)))). The
  // causal mask adds the lowest finite value above the diagonal (float16's in fp16: its range has no inf).
  std::string vit_block(const std::string& x, const VitBlock& blk, const std::string& p, int64_t L) {
    const int64_t C = blk.dim, H = blk.heads, D = C / H;
    std::string qkv = linear(layer_norm(x, *blk.norm1, p + ".norm1"), *blk.qkv, p + ".attn.qkv");  // (B, L, 3C)
    qkv = b_.op("Reshape", p + ".attn.split_heads", {qkv, b_.int64s(p + ".attn.qkv_shape", {0, 0, 3, H, D})});
    qkv = b_.op("Transpose", p + ".attn.qkv_t", {qkv}, {{"perm", Ints{2, 0, 3, 1, 4}}});  // (3, B, H, L, D)
    auto parts = b_.node("Split", p + ".attn.split", {qkv}, {{"axis", int64_t{0}}}, 3);
    const std::string axis0 = b_.int64s(p + ".attn.axis0", {0});
    std::string q = b_.op("Squeeze", p + ".attn.q", {parts[0], axis0});  // (B, H, L, D)
    std::string k = b_.op("Squeeze", p + ".attn.k", {parts[1], axis0});
    std::string v = b_.op("Squeeze", p + ".attn.v", {parts[2], axis0});
    std::string kt = b_.op("Transpose", p + ".attn.kt", {k}, {{"perm", Ints{0, 1, 3, 2}}});
    std::string s = b_.op("Mul", p + ".attn.scores", {b_.op("MatMul", p + ".attn.qk", {q, kt}),
                                                     b_.constant(static_cast<float>(1.0 / std::sqrt(double(D))))});
    if (blk.causal) {
      if (mask_.empty()) {
        const bool fp16 = b_.elem_type() == onnx::TensorProto::FLOAT16;
        const float low = fp16 ? -65504.0f : std::numeric_limits<float>::lowest();
        std::vector<float> m(static_cast<size_t>(L * L), 0.0f);
        for (int64_t i = 0; i < L; ++i)
          for (int64_t j = i + 1; j < L; ++j) m[static_cast<size_t>(i * L + j)] = low;
        mask_ = b_.floats("causal_mask", m, {L, L});
      }
      s = b_.op("Add", p + ".attn.masked", {s, mask_});
    }
    std::string prob = b_.op("Softmax", p + ".attn.softmax", {s}, {{"axis", int64_t{-1}}});
    std::string o = b_.op("MatMul", p + ".attn.av", {prob, v});  // (B, H, L, D)
    o = b_.op("Transpose", p + ".attn.merge_t", {o}, {{"perm", Ints{0, 2, 1, 3}}});  // (B, L, H, D)
    o = b_.op("Reshape", p + ".attn.merge", {o, b_.int64s(p + ".attn.out_shape", {0, 0, C})});
    std::string y = b_.op("Add", p + ".attn.residual", {x, linear(o, *blk.proj, p + ".attn.proj")});
    std::string m = linear(layer_norm(y, *blk.norm2, p + ".norm2"), *blk.fc1, p + ".mlp.fc1");
    m = act(m, Act::gelu, p + ".mlp.act");
    return b_.op("Add", p + ".mlp.residual", {y, linear(m, *blk.fc2, p + ".mlp.fc2")});
  }

  // Patch conv -> tokens (B, N, C) + pos_embed[1:]; the class token (cls_token + pos_embed[0]) first, or
  // last in causal mode (nn/vit.h); the blocks; LN; the class token's row; the head.
  std::string vit(const std::string& input, const VisionTransformer& m) {
    const int64_t C = m.config().embed_dim, L = m.num_tokens(), N = L - 1;
    const Conv2d& pe = *m.patch_embed;
    std::string x = conv(input, *pe.weight, *pe.bias, pe.stride, pe.pad, 1, "patch_embed.proj");  // (B, C, h, w)
    x = b_.op("Reshape", "patch_embed.flat", {x, b_.int64s("patch_embed.flat_shape", {0, C, N})});
    x = b_.op("Transpose", "patch_embed.tokens", {x}, {{"perm", Ints{0, 2, 1}}});  // (B, N, C)
    const Tensor pos = m.pos_embed->cpu().to(DType::f32).contiguous();  // (1, L, C)
    const Tensor cls = m.cls_token->cpu().to(DType::f32).contiguous();
    const float* pv = pos.data<float>();
    std::vector<float> cls_pos(static_cast<size_t>(C));
    for (int64_t c = 0; c < C; ++c) cls_pos[static_cast<size_t>(c)] = cls.data<float>()[c] + pv[c];
    const std::string patch_pos = b_.floats("pos_embed.patches", std::vector<float>(pv + C, pv + L * C), {1, N, C});
    x = b_.op("Add", "pos_embed.add", {x, patch_pos});
    // the class token for every image of the batch: Expand to (B, 1, C)
    std::string batch = b_.op("Shape", "cls_token.batch", {x}, {{"start", int64_t{0}}, {"end", int64_t{1}}});
    std::string shape =
        b_.op("Concat", "cls_token.shape", {batch, b_.int64s("cls_token.rest", {1, C})}, {{"axis", int64_t{0}}});
    std::string tok = b_.op("Expand", "cls_token.expand", {b_.floats("cls_token.pos", cls_pos, {1, 1, C}), shape});
    const bool causal = m.config().causal;
    x = b_.op("Concat", "tokens", causal ? std::vector<std::string>{x, tok} : std::vector<std::string>{tok, x},
              {{"axis", int64_t{1}}});  // (B, L, C)
    for (size_t i = 0; i < m.blocks.size(); ++i) x = vit_block(x, *m.blocks[i], fmt::format("blocks.{}", i), L);
    x = b_.op("Gather", "cls", {layer_norm(x, *m.norm, "norm"), b_.int64s("cls.index", {causal ? N : 0})},
              {{"axis", int64_t{1}}});  // (B, 1, C)
    return linear(b_.op("Reshape", "pre_logits", {x, b_.int64s("pre_logits.shape", {0, C})}), *m.head, "head");
  }

 private:
  GraphBuilder& b_;
  std::string mask_;  // the causal mask initializer, made once for all blocks
};

void set_tensor_type(onnx::ValueInfoProto& v, const std::string& name, int32_t elem,
                     const std::vector<std::variant<int64_t, std::string>>& dims) {
  v.set_name(name);
  auto* tt = v.mutable_type()->mutable_tensor_type();
  tt->set_elem_type(elem);
  for (const auto& d : dims) {
    auto* dim = tt->mutable_shape()->add_dim();
    if (auto* i = std::get_if<int64_t>(&d)) dim->set_dim_value(*i);
    else dim->set_dim_param(std::get<std::string>(d));
  }
}

}  // namespace

OnnxDType parse_onnx_dtype(const std::string& name) {
  if (name == "fp32") return OnnxDType::fp32;
  if (name == "fp16") return OnnxDType::fp16;
  MO_FAIL("ONNX dtype '{}' is not one of fp32, fp16", name);
}

const char* onnx_dtype_name(OnnxDType t) { return t == OnnxDType::fp16 ? "fp16" : "fp32"; }

namespace {

using Dims = std::vector<std::variant<int64_t, std::string>>;

// The ModelProto around the graph `walk` writes from "input" (of shape `input`) to its logits.
std::string model_bytes(const std::string& name, int64_t classes, const Dims& input, const OnnxExportOptions& opt,
                        const std::function<std::string(GraphBuilder&)>& walk) {
  onnx::ModelProto mp;
  mp.set_ir_version(kOnnxIrVersion);
  auto* ops = mp.add_opset_import();
  ops->set_domain("");
  ops->set_version(kOnnxOpset);
  mp.set_producer_name("mo");
  mp.set_producer_version(opt.producer_version);
  mp.set_doc_string(fmt::format("{} exported by mo_convert ({}): input (batch, 3, height, width) RGB normalised "
                                "as metadata_props mean/std say; output logits (batch, {})",
                                name, onnx_dtype_name(opt.dtype), classes));
  for (const auto& [k, v] : opt.metadata) {
    auto* e = mp.add_metadata_props();
    e->set_key(k);
    e->set_value(v);
  }
  onnx::GraphProto& g = *mp.mutable_graph();
  g.set_name(name);
  GraphBuilder b(g, opt.dtype);
  set_tensor_type(*g.add_input(), "input", b.elem_type(), input);
  std::string logits = walk(b);
  // name the last node's output `logits`
  auto* last = g.mutable_node(g.node_size() - 1);
  MO_CHECK(last->output(0) == logits, "onnx export: the graph does not end with its logits");
  last->set_output(0, "logits");
  set_tensor_type(*g.add_output(), "logits", b.elem_type(), {std::string("batch"), classes});
  const size_t size = mp.ByteSizeLong();
  MO_CHECK(size < (size_t{1} << 31) - 1, "{}: the ONNX model would be {} bytes, over protobuf's 2 GiB limit",
           name, size);
  std::string out;
  MO_CHECK(mp.SerializeToString(&out), "onnx export: serialising {} failed", name);
  return out;
}

void write_onnx(const std::string& path, const std::function<std::string()>& make_bytes) {
  std::error_code ec;
  MO_CHECK(!fs::is_directory(path, ec), "cannot write '{}': it is a directory", path);
  const fs::path parent = fs::path(path).parent_path();
  MO_CHECK(parent.empty() || fs::is_directory(parent, ec), "cannot write '{}': folder '{}' does not exist", path,
           parent.string());
  const std::string bytes = make_bytes();
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    MO_CHECK(f, "cannot write '{}': {}", tmp, std::strerror(errno));
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    f.close();
    if (!f) {
      std::error_code ec;
      fs::remove(tmp, ec);
      MO_FAIL("cannot write '{}' ({} bytes): {}", tmp, bytes.size(), std::strerror(errno));
    }
  }
  fs::rename(tmp, path, ec);
  if (ec) {
    std::error_code ec2;
    fs::remove(tmp, ec2);
    MO_FAIL("cannot move '{}' to '{}': {}", tmp, path, ec.message());
  }
}

}  // namespace

std::string onnx_model_bytes(const MambaOut& model, const OnnxExportOptions& opt) {
  const MambaOutConfig& c = model.config();
  const Dims input = {std::string("batch"), int64_t{3}, std::string("height"), std::string("width")};
  return model_bytes(c.name, c.num_classes, input, opt,
                     [&](GraphBuilder& b) { return ModelGraph(b).mambaout("input", model); });
}

std::string onnx_model_bytes(const VisionTransformer& model, const OnnxExportOptions& opt) {
  const VitConfig& c = model.config();  // the position embedding fixes the image size
  return model_bytes(c.name, c.num_classes, {std::string("batch"), int64_t{3}, c.img_size, c.img_size}, opt,
                     [&](GraphBuilder& b) { return ModelGraph(b).vit("input", model); });
}

void export_onnx(const MambaOut& model, const std::string& path, const OnnxExportOptions& opt) {
  write_onnx(path, [&] { return onnx_model_bytes(model, opt); });
}

void export_onnx(const VisionTransformer& model, const std::string& path, const OnnxExportOptions& opt) {
  write_onnx(path, [&] { return onnx_model_bytes(model, opt); });
}

}  // namespace mo::nn::io
