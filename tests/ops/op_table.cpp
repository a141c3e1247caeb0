// op_table.cpp: the op cases (see op_table.h). One section per op: a function that gives the op, its
// PyTorch expression and its inputs a name, then its samples. The small samples run on every driver
// (kAll); the CUDA-only ones (kCuda) are the shapes the kernels care about: MambaOut stage shapes, odd
// widths that take the scalar paths, pointers off alignment, maps the tiles do not divide.
#include "tests/ops/op_table.h"

#include <cctype>
#include <set>

#include "ops/activation/activation.h"
#include "ops/attention/attention.h"
#include "ops/conv/conv2d.h"
#include "ops/conv/dwconv2d.h"
#include "ops/elementwise/elementwise.h"
#include "ops/fused/gated_dwconv.h"
#include "ops/fused/gated_dwconv_linear.h"
#include "ops/fused/layer_norm_linear.h"
#include "ops/linear/linear.h"
#include "ops/loss/cross_entropy.h"
#include "ops/norm/layer_norm.h"
#include "ops/reduce/mean_hw.h"
#include "ops/regularize/drop_path.h"
#include "ops/shape/shape.h"
#include "ops/shape/tokens.h"
#include "tests/test_util.h"

namespace mo::test {

OpInput OpInput::no_grad() const {
  OpInput r = *this;
  r.grad = false;
  return r;
}
OpInput OpInput::f32() const {
  OpInput r = *this;
  r.keep_f32 = true;
  return r;
}
OpInput OpInput::at(int64_t elements) const {
  OpInput r = *this;
  r.offset = elements;
  return r;
}

OpInput normal(const Shape& s, double std, double mean) {
  return {s, [std, mean](const Shape& sh, uint64_t seed) { return randn(sh, seed, DType::f64, std, mean); }};
}
OpInput uniform(const Shape& s, double lo, double hi) {
  return {s, [lo, hi](const Shape& sh, uint64_t seed) { return rand_uniform(sh, seed, lo, hi, DType::f64); }, false};
}
OpInput soft_targets(int64_t rows, int64_t classes) {
  auto draw = [](const Shape& sh, uint64_t seed) {
    auto v = rand_uniform(sh, seed, 0.0, 1.0, DType::f64).to_vector<double>();
    for (int64_t r = 0; r < sh[0]; ++r) {
      double s = 0;
      for (int64_t j = 0; j < sh[1]; ++j) s += v[r * sh[1] + j];
      for (int64_t j = 0; j < sh[1]; ++j) v[r * sh[1] + j] /= s;
    }
    return Tensor::from_vector(v, sh);
  };
  return {{rows, classes}, draw, false};
}
OpInput given(const Tensor& data) {
  Tensor t = data.to(DType::f64).contiguous();
  return {t.shape(), [t](const Shape&, uint64_t) { return t.clone(); }, false};
}

namespace {

using V = const std::vector<Tensor>&;

// ---- linear, matmul, linear_residual, layer_norm_linear -----------------------------------------------
OpCase linear_op(const std::string& name, std::vector<OpInput> in) {  // x (..., K), w (N, K) [, b (N)]
  if (in.size() == 2) return {name, [](V v) { return linear(v[0], v[1], Tensor()); }, in, "F.linear(x[0], x[1])"};
  return {name, [](V v) { return linear(v[0], v[1], v[2]); }, in, "F.linear(x[0], x[1], x[2])"};
}
OpCase matmul_op(const std::string& name, std::vector<OpInput> in) {
  return {name, [](V v) { return matmul(v[0], v[1]); }, in, "x[0] @ x[1]"};
}
OpCase linear_residual_op(const std::string& name, std::vector<OpInput> in) {  // x, w [, b], residual
  if (in.size() == 3)
    return {name, [](V v) { return linear_residual(v[0], v[1], Tensor(), v[2]); }, in, "F.linear(x[0], x[1]) + x[2]"};
  return {name, [](V v) { return linear_residual(v[0], v[1], v[2], v[3]); }, in, "F.linear(x[0], x[1], x[2]) + x[3]"};
}
OpCase layer_norm_linear_op(const std::string& name, std::vector<OpInput> in) {  // x, γ, β, w [, b]
  const std::string ln = "F.layer_norm(x[0], x[0].shape[-1:], x[1], x[2], eps=1e-6)";
  if (in.size() == 4)
    return {name, [](V v) { return layer_norm_linear(v[0], v[1], v[2], 1e-6, v[3], Tensor()); }, in,
            "F.linear(" + ln + ", x[3])"};
  return {name, [](V v) { return layer_norm_linear(v[0], v[1], v[2], 1e-6, v[3], v[4]); }, in,
          "F.linear(" + ln + ", x[3], x[4])"};
}

// ---- conv2d, dwconv2d (NHWC; PyTorch's NCHW conv between two permutes) ----------------------------------
std::string nhwc_conv(const std::string& args) {
  return "F.conv2d(x[0].permute(0, 3, 1, 2), " + args + ").permute(0, 2, 3, 1)";
}
OpCase conv_op(const std::string& name, std::vector<OpInput> in, int stride, int pad) {  // x, w (O, I, kh, kw) [, b]
  const bool bias = in.size() == 3;
  return {name, [=](V v) { return conv2d(v[0], v[1], bias ? v[2] : Tensor(), stride, pad); }, in,
          nhwc_conv(fmt::format("x[1], {}, stride={}, padding={}", bias ? "x[2]" : "None", stride, pad))};
}
// x (B, H, W, Ci), w (Co, Ci, kh, kw) with std 0.2, bias (Co) when `bias`
OpCase conv(const std::string& name, const Shape& xs, const Shape& ws, int stride, int pad, bool bias = true,
            int64_t x_offset = 0) {
  std::vector<OpInput> in{normal(xs).at(x_offset), normal(ws, 0.2)};
  if (bias) in.push_back(normal({ws[0]}));
  return conv_op(name, in, stride, pad).on(kCuda);
}
OpCase dwconv_op(const std::string& name, std::vector<OpInput> in, int pad) {  // x, w (C, 1, k, k), b (C)
  return {name, [=](V v) { return dwconv2d(v[0], v[1], v[2], pad); }, in,
          nhwc_conv(fmt::format("x[1], x[2], padding={}, groups=x[1].shape[0]", pad))};
}
OpCase dwconv(const Shape& xs) {  // 7×7 'same', weight std 0.2
  return dwconv_op("dwconv2d " + shape_str(xs), {normal(xs), normal({xs[3], 1, 7, 7}, 0.2), normal({xs[3]})}, 3)
      .on(kCuda);
}

// ---- layer_norm ------------------------------------------------------------------------------------------
OpCase layer_norm_op(const std::string& name, std::vector<OpInput> in) {
  return {name, [](V v) { return layer_norm(v[0], v[1], v[2], 1e-6); }, in,
          "F.layer_norm(x[0], x[0].shape[-1:], x[1], x[2], eps=1e-6)"};
}
// x ~ N(0.3, 1.5²), γ ~ N(1, 1), β ~ N(0, 1); x may start `offset` elements in
OpCase layer_norm_cuda(const Shape& xs, std::vector<DType> dts, int64_t offset = 0) {
  const int64_t C = xs.back();
  std::string name = "layer_norm " + shape_str(xs) + (offset ? " offset " + std::to_string(offset) : "");
  return layer_norm_op(name, {normal(xs, 1.5, 0.3).at(offset), normal({C}, 1.0, 1.0), normal({C})})
      .on(kCuda)
      .dtypes(std::move(dts));
}

// ---- gated_dwconv ----------------------------------------------------------------------------------------
// z (B, H, W, 2h) -> m (B, H, W, h), conv width cc (7×7); z and the upstream gradient may start `offset`
// elements into their storage (every pointer misaligned for offset % 8 != 0: the 1-element items).
OpCase gated(int64_t B, int64_t H, int64_t W, int64_t h, int64_t cc, Act act, int64_t offset = 0, double w_std = 0.2) {
  std::string name = fmt::format("gated_dwconv {} {}x{}x{}x{} h {} cc {}", act_name(act), B, H, W, 2 * h, h, cc);
  if (offset) name += " offset " + std::to_string(offset);
  std::string torch = fmt::format(
      "(lambda g, i, c: F.{}(g) * torch.cat([i, F.conv2d(c.permute(0, 3, 1, 2), x[1], x[2], padding=3, "
      "groups={}).permute(0, 2, 3, 1)], -1))(*torch.split(x[0], [{}, {}, {}], -1))",
      act_name(act), cc, h, h - cc, cc);
  OpCase c{name,
           [=](V v) { return gated_dwconv(v[0], v[1], v[2], h, act); },
           {normal({B, H, W, 2 * h}).at(offset), normal({cc, 1, 7, 7}, w_std), normal({cc})},
           torch,
           kCuda};
  c.no_grad_same = true;  // inference writes no conv output: m must not change
  return c.upstream_at(offset);
}

// ---- gated_dwconv_linear_residual: r + fc2(gate(z)), one node that recomputes m in backward ---------------
// fc2 (n, h) with std 0.2, its bias when `bias`; the same bits as linear_residual(gated_dwconv(z), ...)
OpCase gated_linear(int64_t B, int64_t H, int64_t W, int64_t h, int64_t cc, int64_t n, Act act, bool bias = true,
                    double w_std = 0.2) {
  OpCase g = gated(B, H, W, h, cc, act, 0, w_std);
  std::string name = fmt::format("gated_dwconv_linear {} {}x{}x{}x{} h {} cc {} -> {}{}", act_name(act), B, H, W, 2 * h,
                                 h, cc, n, bias ? "" : " no bias");
  std::vector<OpInput> in = g.inputs;
  in.push_back(normal({n, h}, 0.2));
  if (bias) in.push_back(normal({n}));
  in.push_back(normal({B, H, W, n}));
  auto fused = [=](V v) {
    return gated_dwconv_linear_residual(v[0], v[1], v[2], h, act, v[3], bias ? v[4] : Tensor(), v.back());
  };
  auto parts = [=](V v) {
    return linear_residual(gated_dwconv(v[0], v[1], v[2], h, act), v[3], bias ? v[4] : Tensor(), v.back());
  };
  std::string torch = fmt::format("F.linear({}, x[3]{}) + x[{}]", g.torch, bias ? ", x[4]" : "", in.size() - 1);
  return OpCase{name, fused, in, torch, kCuda}.same_bits_as(parts);
}

// ---- elementwise, activations, reductions, loss ----------------------------------------------------------
OpCase add_op(const std::string& n, std::vector<OpInput> in) {
  return {n, [](V v) { return add(v[0], v[1]); }, in, "x[0] + x[1]"};
}
OpCase mul_op(const std::string& n, std::vector<OpInput> in) {
  return {n, [](V v) { return mul(v[0], v[1]); }, in, "x[0] * x[1]"};
}
OpCase scale_op(const std::string& n, std::vector<OpInput> in, double s) {
  return {n, [s](V v) { return scale(v[0], s); }, in, fmt::format("x[0] * {}", s)};
}
OpCase mul_channel_op(const std::string& n, std::vector<OpInput> in) {
  return {n, [](V v) { return mul_channel(v[0], v[1]); }, in, "x[0] * x[1]"};
}
OpCase act_op(const std::string& n, std::vector<OpInput> in, Act a) {
  return {n, [a](V v) { return activation(v[0], a); }, in, fmt::format("F.{}(x[0])", act_name(a))};
}
OpCase mean_hw_op(const std::string& n, std::vector<OpInput> in) {
  return {n, [](V v) { return mean_hw(v[0]); }, in, "x[0].mean([1, 2])"};
}
OpCase ce_op(const std::string& n, std::vector<OpInput> in) {  // logits, soft targets
  return {n, [](V v) { return soft_target_cross_entropy(v[0], v[1]); }, in,
          "torch.sum(-x[1] * F.log_softmax(x[0], dim=-1), dim=-1).mean()"};
}

// ---- drop_path -------------------------------------------------------------------------------------------
// PyTorch cannot draw our philox keep decisions, so the PyTorch side gets them as an input: the 0/1 keep
// mask of drop_path_scales, shaped (B, 1, ...), in timm's formula x / (1 − p) · mask. Forward and gradient
// are then exact for p = 0.5 (the scale 2 is a float). The mask is ignored by our op, which draws its own.
OpCase drop_path_op(const Shape& xs, double p, uint64_t seed, uint64_t stream, bool with_mask) {
  std::vector<OpInput> in{normal(xs)};
  if (with_mask) {
    auto s = drop_path_scales(xs[0], p, seed, stream);
    Shape ms(xs.size(), 1);
    ms[0] = xs[0];
    std::vector<double> keep;
    for (float v : s) keep.push_back(v * (1.0 - p));
    in.push_back(given(Tensor::from_vector(keep, ms)));
  }
  return OpCase{"drop_path " + shape_str(xs), [=](V v) { return drop_path(v[0], p, true, seed, stream); }, in,
                fmt::format("x[0].div(1 - {}) * x[1]", p)}
      .tols(0.0, 2e-2);  // float32: the same draws and the same product, to the bit
}

// ---- attention over packed qkv (B, L, 3·H·D), and the ViT token ops ------------------------------------------
OpCase attention_op(int64_t B, int64_t L, int64_t H, int64_t D, bool causal) {
  return OpCase{fmt::format("attention B{} L{} H{} D{}{}", B, L, H, D, causal ? " causal" : ""),
                [=](V v) { return attention(v[0], H, causal); }, {normal({B, L, 3 * H * D})},
                fmt::format("(lambda q, k, v: F._scaled_dot_product_attention(q, k, v, None, 0.0, False, {})[0])"
                            "(*x[0].reshape({}, {}, 3, {}, {}).permute(2, 0, 3, 1, 4).unbind(0))"
                            ".transpose(1, 2).reshape({}, {}, {})",  // torch 1.13's name of F.scaled_dot_product_attention
                            causal ? "True" : "False", B, L, H, D, B, L, H * D)}
      .gradcheck_checks(256);
}
OpCase class_token_op(int64_t B, int64_t N, int64_t C, bool last) {
  return OpCase{fmt::format("class_token_embed {}x{}x{}{}", B, N, C, last ? " last" : ""),
                [=](V v) { return class_token_embed(v[0], v[1], v[2], last); },
                {normal({B, N, C}), normal({1, 1, C}), normal({1, N + 1, C})},
                last ? fmt::format("torch.cat([x[0], x[1].expand({}, 1, {})], 1) + torch.cat([x[2][:, 1:], x[2][:, :1]], 1)", B, C)
                     : fmt::format("torch.cat([x[1].expand({}, 1, {}), x[0]], 1) + x[2]", B, C)}
      .tols(1e-6, 1e-2);
}

// ---- split_last, concat_last, permute, reshape: copies, so every device gives the same bits -----------------
OpCase shape_op(const std::string& n, OpFn fn, std::vector<OpInput> in, const std::string& torch) {
  return OpCase{n, std::move(fn), std::move(in), torch}.tols(0.0, 0.0);
}
std::string perm_str(const std::vector<int64_t>& p) { return fmt::format("{}", fmt::join(p, ", ")); }
OpCase permute_op(const Shape& xs, const std::vector<int64_t>& perm, int64_t offset = 0) {
  return shape_op(
      "permute " + shape_str(xs) + " [" + perm_str(perm) + "]" + (offset ? " offset " + std::to_string(offset) : ""),
      [perm](V v) { return permute(v[0], perm); }, {normal(xs).at(offset)}, "x[0].permute(" + perm_str(perm) + ")");
}
// split into three, put back in another order (every element's gradient comes from one place)
OpCase split_reorder(const Shape& xs, int64_t a, int64_t b, int64_t offset = 0) {
  const int64_t c = xs.back() - a - b;
  return shape_op(
      fmt::format("split_last {} [{}, {}, {}] reordered{}", shape_str(xs), a, b, c,
                  offset ? " offset " + std::to_string(offset) : ""),
      [=](V v) {
        auto p = split_last(v[0], {a, b, c});
        return concat_last({p[2], p[0], p[1]});
      },
      {normal(xs).at(offset)},
      fmt::format("(lambda p: torch.cat([p[2], p[0], p[1]], -1))(torch.split(x[0], [{}, {}, {}], -1))", a, b, c));
}
// one piece of a split (the others get a zero gradient)
OpCase split_piece(const Shape& xs, int64_t a) {
  const int64_t b = xs.back() - a;
  return shape_op(
      fmt::format("split_last {} [{}, {}] piece 1", shape_str(xs), a, b),
      [=](V v) {
        return split_last(v[0], {a, b})[1];
      },
      {normal(xs)}, fmt::format("torch.split(x[0], [{}, {}], -1)[1]", a, b));
}
OpCase concat2(const Shape& as, const Shape& bs, int64_t b_offset = 0) {
  return shape_op(
      fmt::format("concat_last {} {}{}", shape_str(as), shape_str(bs),
                  b_offset ? " offset " + std::to_string(b_offset) : ""),
      [](V v) {
        return concat_last({v[0], v[1]});
      },
      {normal(as), normal(bs).at(b_offset)}, "torch.cat([x[0], x[1]], -1)");
}

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char ch : s) h = (h ^ ch) * 1099511628211ull;
  return h;
}

std::vector<OpCase> build() {
  std::vector<OpCase> t;
  auto add_case = [&](OpCase c) { t.push_back(std::move(c)); };
  const std::vector<DType> f32{DType::f32}, bf16{DType::bf16};

  // linear / matmul
  add_case(linear_op("linear", {normal({2, 3, 5}), normal({4, 5}), normal({4})}).on(kAll));
  add_case(linear_op("linear no bias", {normal({6, 5}), normal({3, 5})}).on(kAll));
  add_case(linear_op("linear 6->4", {normal({2, 5, 6}), normal({4, 6}), normal({4})}).on(kAll));
  // (2·56·56, 96) -> 512 with bias: the fc1 of a stage-1 block; dW and db from one GEMM (the BGRADB epilogue)
  add_case(
      linear_op("linear 96->512", {normal({2, 56, 56, 96}), normal({512, 96}, 0.1), normal({512})}).on(kCuda).det());
  add_case(linear_op("linear 96->384", {normal({2, 56, 56, 96}), normal({384, 96}), normal({384})}).on(kCuda).det());
  add_case(linear_op("linear 13->5 no bias", {normal({7, 13}), normal({5, 13})}).on(kCuda));
  add_case(linear_op("linear 3x7x13->29", {normal({3, 7, 13}), normal({29, 13}), normal({29})}).on(kCuda));
  // input, weight and bias 1 or 3 elements into their storage (not 16-byte aligned): the alignment given to
  // cuBLASLt and the bias pre-fill path instead of the epilogue
  add_case(
      linear_op("linear misaligned", {normal({37, 24}).at(1), normal({40, 24}).at(3), normal({40}).at(1)}).on(kCuda));
  // odd leading dimensions (K = 13): rows of A are not 16-byte multiples either
  add_case(linear_op("linear K=13", {normal({9, 13}), normal({11, 13}), normal({11})}).on(kCuda));
  add_case(matmul_op("matmul", {normal({3, 4}), normal({4, 2})}).on(kAll));
  add_case(matmul_op("matmul 33x17x29", {normal({33, 17}), normal({17, 29})}).on(kCuda));
  add_case(matmul_op("matmul 256x512x64", {normal({256, 512}), normal({512, 64})}).on(kCuda));

  // linear_residual: fc2 + residual of a block (the residual as cuBLASLt's C operand); an odd width with
  // input, bias and residual off alignment (the copy-then-accumulate paths)
  add_case(linear_residual_op("linear_residual", {normal({3, 2, 7}), normal({5, 7}), normal({5}), normal({3, 2, 5})})
               .on(kAll));
  add_case(linear_residual_op("linear_residual no bias", {normal({4, 6}), normal({3, 6}), normal({4, 3})}).on(kAll));
  add_case(
      linear_residual_op("linear_residual 6->4", {normal({2, 5, 6}), normal({4, 6}), normal({4}), normal({2, 5, 4})})
          .on(kAll));
  add_case(linear_residual_op("linear_residual 256->96",
                              {normal({2, 14, 14, 256}), normal({96, 256}, 0.1), normal({96}), normal({2, 14, 14, 96})})
               .on(kCuda)
               .det());
  add_case(linear_residual_op("linear_residual 41->13 misaligned", {normal({3, 5, 41}).at(1), normal({13, 41}, 0.1),
                                                                    normal({13}).at(1), normal({3, 5, 13}).at(1)})
               .on(kCuda));

  // layer_norm_linear: fc1(norm(x)) of a block
  add_case(layer_norm_linear_op("layer_norm_linear",
                                {normal({3, 2, 7}), normal({7}), normal({7}), normal({5, 7}), normal({5})})
               .on(kAll));
  add_case(layer_norm_linear_op("layer_norm_linear no bias", {normal({4, 6}), normal({6}), normal({6}), normal({3, 6})})
               .on(kAll));
  add_case(layer_norm_linear_op("layer_norm_linear 10->6",
                                {normal({2, 3, 4, 10}), normal({10}), normal({10}), normal({6, 10}), normal({6})})
               .on(kAll));
  add_case(layer_norm_linear_op("layer_norm_linear 96->512", {normal({2, 14, 14, 96}), normal({96}), normal({96}),
                                                              normal({512, 96}, 0.1), normal({512})})
               .on(kCuda)
               .det());
  add_case(layer_norm_linear_op(
               "layer_norm_linear 40->82 misaligned",
               {normal({3, 5, 7, 40}).at(1), normal({40}), normal({40}), normal({82, 40}, 0.1), normal({82})})
               .on(kCuda));

  // conv2d
  add_case(conv_op("conv2d 3x3 s2", {normal({2, 7, 6, 3}), normal({4, 3, 3, 3}), normal({4})}, 2, 1).on(kAll));
  add_case(conv_op("conv2d 5x3 s1 p2", {normal({1, 5, 4, 2}), normal({3, 2, 5, 3}), normal({3})}, 1, 2).on(kAll));
  add_case(conv_op("conv2d 3x3 s2 9x8", {normal({2, 9, 8, 3}), normal({5, 3, 3, 3}), normal({5})}, 2, 1).on(kAll));
  add_case(conv("conv2d 3x3 s2 48->96", {2, 32, 32, 48}, {96, 48, 3, 3}, 2, 1).det());  // downsample
  add_case(conv("conv2d stem 3->13 on 31x31", {2, 31, 31, 3}, {13, 3, 3, 3}, 2, 1));
  add_case(conv("conv2d 7x7 map 16->24 no bias", {2, 7, 7, 16}, {24, 16, 3, 3}, 2, 1, false));
  add_case(conv("conv2d 2x2 s2 p0 on 7x7, 13 ch", {3, 7, 7, 13}, {8, 13, 2, 2}, 2, 0));
  add_case(conv("conv2d 5x3 s1 p2 5 ch", {1, 9, 6, 5}, {7, 5, 5, 3}, 1, 2));
  // im2col / col2im take 16-byte chunks when Ci is a multiple of 16 / sizeof(T) and the pointers are aligned:
  // Ci = 4 (f32 vector, bf16 scalar; K = 36 pads to Kp = 40, so f32 rows end in a zero chunk), 12 (f32
  // vector), 24 and 96 (both vector), each also 1 element off alignment (the scalar path)
  for (int64_t ci : {4, 12, 24, 96})
    for (int64_t off : {0, 1})
      add_case(conv(fmt::format("conv2d 3x3 s2 {} ch, offset {}", ci, off), {2, 13, 11, ci}, {ci + 8, ci, 3, 3}, 2, 1,
                    true, off));
  // stride 1 and 3 (tap stepping in the col2im gather), a 4x4 kernel with stride 3
  add_case(conv("conv2d 3x3 s1 p1 16 ch", {2, 9, 10, 16}, {8, 16, 3, 3}, 1, 1));
  add_case(conv("conv2d 4x4 s3 p2 8 ch", {1, 14, 13, 8}, {16, 8, 4, 4}, 3, 2));
  add_case(conv("conv2d stem 3->24", {2, 33, 31, 3}, {24, 3, 3, 3}, 2, 1).det());
  add_case(
      conv_op("conv2d 3x3 s2 48->96 w std 1", {normal({2, 32, 32, 48}), normal({96, 48, 3, 3}), normal({96})}, 2, 1)
          .on(kCuda)
          .det());
  // the image needs no gradient: the backward gets an undefined dx
  add_case(conv_op("conv2d no dx", {normal({2, 16, 16, 3}).no_grad(), normal({8, 3, 3, 3}, 0.2), normal({8})}, 2, 1)
               .on(kCuda));

  // dwconv2d (7×7)
  add_case(dwconv_op("dwconv2d", {normal({2, 6, 5, 3}), normal({3, 1, 7, 7}), normal({3})}, 3)
               .on(kAll)
               .gradcheck_checks(200));
  add_case(dwconv_op("dwconv2d 6x7x4", {normal({2, 6, 7, 4}), normal({4, 1, 7, 7}), normal({4})}, 3).on(kAll));
  add_case(dwconv({2, 7, 7, 13}));                  // one partial channel block, scalar loads
  add_case(dwconv({1, 9, 11, 40}));                 // maps the 7×7 tiles do not divide; 40 = 32 + 8
  add_case(dwconv({3, 5, 3, 34}));                  // map smaller than a tile; 4-byte bf16 items
  add_case(dwconv({2, 14, 14, 48}));                // femto stage 1 channels: a half-used channel block
  add_case(dwconv({2, 56, 56, 96}));                // tiny stage 1
  add_case(dwconv({2, 28, 28, 192}).dtypes(bf16));  // tiny stage 2
  add_case(dwconv({4, 7, 7, 576}));                 // tiny stage 4
  add_case(dwconv({4, 28, 28, 96}).det());          // many tiles per slice: the partial sums are split across blocks

  // layer_norm: the fast path at every row-group width (C/4 vectors: 12 → 4 lanes, 24 → 8, 48 → 16,
  // 96/144/192/256 → 32 lanes × 4/6/8), the fallback (13, 1152 and 2304 > 1024), a row count that fills no
  // block evenly; x one element into its storage (not 16-byte aligned: the fallback kernels)
  add_case(layer_norm_op("layer_norm", {normal({3, 2, 7}), normal({7}), normal({7})}).on(kAll));
  add_case(layer_norm_op("layer_norm 3x4x10", {normal({3, 4, 10}), normal({10}), normal({10})}).on(kAll));
  const std::set<int64_t> ln_f32{48, 96, 192, 384, 576, 768, 1024, 13, 1152},
      ln_bf16{48, 96, 128, 256, 288, 512, 576, 768, 1024, 13, 2304};
  std::set<int64_t> ln_all = ln_f32;
  ln_all.insert(ln_bf16.begin(), ln_bf16.end());
  for (int64_t C : ln_all) {
    std::vector<DType> dts;
    if (ln_f32.count(C)) dts.push_back(DType::f32);
    if (ln_bf16.count(C)) dts.push_back(DType::bf16);
    add_case(layer_norm_cuda({37, C}, dts));
  }
  add_case(layer_norm_cuda({2, 7, 7, 96}, f32));
  add_case(layer_norm_cuda({2, 56, 56, 96}, {DType::f32, DType::bf16}));  // tiny stage 1: many row groups per block
  add_case(layer_norm_cuda({3, 7, 7, 576}, bf16));                        // tiny stage 4
  add_case(layer_norm_cuda({21, 96}, {DType::f32, DType::bf16}, 1));
  add_case(layer_norm_cuda({4, 28, 28, 96}, {DType::f32, DType::bf16}).det());

  // gated_dwconv: h = 5 with cc = 3 (identity part of 2 channels, conv part of 3)
  for (Act a : {Act::gelu, Act::silu}) add_case(gated(2, 4, 5, 5, 3, a, 0, 0.3).on(kAll).gradcheck_checks(200));
  add_case(gated(2, 7, 7, 20, 13, Act::gelu));       // odd widths: 1-element items everywhere
  add_case(gated(2, 7, 7, 341, 128, Act::gelu));     // mambaout_base stage 1 (h = int(8/3·128))
  add_case(gated(1, 9, 10, 32, 32, Act::silu));      // cc = h: no identity channels
  add_case(gated(2, 11, 6, 96, 40, Act::silu));      // vectors with a partial channel block
  add_case(gated(3, 15, 9, 64, 24, Act::gelu));      // 14×7 tiles divide neither side; B = 3
  add_case(gated(1, 29, 22, 48, 16, Act::silu));     // several tiles each way, partial last ones
  add_case(gated(2, 5, 3, 40, 8, Act::gelu));        // map smaller than one tile
  add_case(gated(2, 9, 11, 256, 96, Act::gelu, 1));  // tiny's widths, every pointer off by one
  add_case(gated(1, 14, 7, 128, 48, Act::silu, 3));
  add_case(gated(2, 8, 8, 344, 128, Act::gelu, 4));  // 8-byte (bf16) / 16-byte (f32) aligned
  // every stage width (h = int(8/3·C), cc = C) of mambaout_femto, tiny/small, base and padded base
  const int64_t widths[][2] = {{128, 48},  {256, 96},   {512, 192},  {768, 288}, {1024, 384}, {1536, 576}, {341, 128},
                               {682, 256}, {1365, 512}, {2048, 768}, {344, 128}, {688, 256},  {1368, 512}};
  for (auto& wd : widths)
    for (Act a : {Act::gelu, Act::silu}) add_case(gated(1, 9, 8, wd[0], wd[1], a));
  add_case(gated(2, 56, 56, 256, 96, Act::gelu));                // tiny stage 1
  add_case(gated(2, 28, 28, 512, 192, Act::silu).dtypes(bf16));  // tiny stage 2
  add_case(gated(2, 7, 7, 1536, 576, Act::gelu).dtypes(bf16));   // tiny stage 4
  add_case(gated(2, 7, 7, 1536, 576, Act::silu).dtypes(f32));
  add_case(gated(2, 14, 14, 960, 384, Act::silu).dtypes(bf16));  // rw-style stage 3: h = 2.5·C, cc = C
  add_case(gated(4, 28, 28, 256, 96, Act::gelu).det());          // many tiles: partial sums across blocks

  // gated_dwconv_linear_residual: h = 5 with cc = 3, fc2 5 -> 4, with and without fc2's bias; on CUDA
  // tiny's stage-1 widths (the 16-byte paths), odd widths (1-element items), cc = h, padded base stage 1
  for (Act a : {Act::gelu, Act::silu})
    add_case(gated_linear(2, 4, 5, 5, 3, 4, a, true, 0.3).on(kAll).gradcheck_checks(200));
  add_case(gated_linear(1, 3, 9, 4, 4, 3, Act::gelu, false, 0.3).on(kAll).gradcheck_checks(200));
  add_case(gated_linear(2, 9, 11, 256, 96, 96, Act::gelu).det());
  add_case(gated_linear(1, 7, 7, 13, 5, 7, Act::silu).det());
  add_case(gated_linear(2, 15, 9, 64, 64, 40, Act::gelu).det());
  add_case(gated_linear(1, 29, 22, 344, 128, 128, Act::gelu).det());

  // elementwise
  add_case(add_op("add", {normal({3, 4}), normal({3, 4})}).on(kAll));
  add_case(mul_op("mul", {normal({3, 4}), normal({3, 4})}).on(kAll));
  add_case(scale_op("scale", {normal({3, 4})}, -0.7).on(kAll));
  add_case(mul_channel_op("mul_channel", {normal({2, 3, 4}), normal({4})}).on(kAll));
  for (const Shape& s : {Shape{2, 7, 7, 13}, Shape{2, 56, 56, 96}}) {
    add_case(add_op("add " + shape_str(s), {normal(s), normal(s)}).on(kCuda));
    add_case(mul_op("mul " + shape_str(s), {normal(s), normal(s)}).on(kCuda));
    add_case(scale_op("scale " + shape_str(s), {normal(s)}, -0.37).on(kCuda));
    add_case(mul_channel_op("mul_channel " + shape_str(s), {normal(s), normal({s.back()})}).on(kCuda));
  }
  add_case(mul_channel_op("mul_channel [4, 56, 56, 96]", {normal({4, 56, 56, 96}), normal({96})}).on(kCuda).det());

  // activations
  for (Act a : {Act::gelu, Act::silu}) {
    add_case(act_op(act_name(a), {normal({4, 9}, 2.0)}, a).on(kAll));
    add_case(act_op(std::string(act_name(a)) + " [50]", {normal({50}, 3.0)}, a).on(kAll));
    for (const Shape& s : {Shape{3, 7, 7, 13}, Shape{2, 56, 56, 96}})
      add_case(act_op(std::string(act_name(a)) + " " + shape_str(s), {normal(s, 2.0)}, a).on(kCuda));
  }

  // mean_hw
  add_case(mean_hw_op("mean_hw", {normal({2, 3, 4, 5})}).on(kAll));
  add_case(mean_hw_op("mean_hw 5x4", {normal({2, 3, 5, 4})}).on(kAll));
  add_case(mean_hw_op("mean_hw 7x7x13", {normal({2, 7, 7, 13})}).on(kCuda));
  add_case(mean_hw_op("mean_hw 7x7x768", {normal({3, 7, 7, 768})}).on(kCuda));
  add_case(mean_hw_op("mean_hw 56x56x96", {normal({4, 56, 56, 96})}).on(kCuda).det());  // multi-chunk reduction

  // soft-target cross-entropy; on CUDA also bf16 logits with float32 targets (the mixup targets stay f32)
  add_case(ce_op("cross_entropy", {normal({3, 5}, 3.0), uniform({3, 5}, 0.0, 1.0)}).on(kAll));
  add_case(ce_op("cross_entropy 3x7", {normal({3, 7}, 2.0), uniform({3, 7}, 0.0, 1.0)}).on(kAll));
  for (auto [B, N] : {std::pair<int64_t, int64_t>{8, 1000}, {5, 13}, {300, 100}}) {
    std::string tag = std::to_string(B) + "x" + std::to_string(N);
    add_case(ce_op("cross_entropy " + tag, {normal({B, N}, 3.0), soft_targets(B, N)}).on(kCuda));
    add_case(ce_op("cross_entropy f32 target " + tag, {normal({B, N}, 3.0), soft_targets(B, N).f32()})
                 .on(kCuda)
                 .dtypes(bf16));
  }
  add_case(ce_op("cross_entropy 64x1000", {normal({64, 1000}), soft_targets(64, 1000)}).on(kCuda).det());

  // drop_path: rate 0.5 over 16 samples (some rows dropped, the rest scaled by 2; the gradient follows the mask)
  add_case(drop_path_op({16, 3, 2}, 0.5, 42, 7, true).on(kAll));
  add_case(drop_path_op({64, 7, 7, 13}, 0.5, 1234, 7, false).on(kCuda));
  add_case(drop_path_op({64, 4, 4, 96}, 0.5, 1234, 7, false).on(kCuda));

  // attention: CPU any head dim; CUDA head dim 64. bf16: blocks of 64 rows (4 warps × 16) over 64-key
  // (forward) and 32-row (backward) tiles; f32: 64 × 32 and 32 × 32. L = 1, L < 16, and L mod 64 in every
  // class: 0, 1–15, 16, 17–31, 32, 33–47, 48, 49–63 (the last block's warps with rows, the tiles past L)
  for (bool causal : {false, true}) {
    add_case(attention_op(2, 5, 2, 3, causal).on(kCpu));
    add_case(attention_op(1, 7, 1, 4, causal).on(kCpu));
    add_case(attention_op(3, 1, 2, 2, causal).on(kCpu));
    for (auto [B, L, H] : {std::tuple{2, 17, 3}, std::tuple{2, 65, 3}, std::tuple{1, 197, 6}, std::tuple{3, 1, 2},
                           std::tuple{1, 130, 1}, std::tuple{2, 5, 2}, std::tuple{1, 16, 2}, std::tuple{2, 48, 1},
                           std::tuple{1, 64, 3}, std::tuple{1, 96, 2}, std::tuple{2, 100, 2}, std::tuple{1, 127, 2},
                           std::tuple{1, 128, 1}})
      add_case(attention_op(B, L, H, 64, causal).on(kCuda));
  }
  add_case(attention_op(4, 197, 3, 64, false).on(kCuda).det());
  add_case(attention_op(24, 197, 6, 64, true).on(kCuda).det());  // 576 bf16 blocks: more than the GPU holds at once
  for (bool causal : {false, true}) {  // qkv and the upstream gradient off 16-byte alignment: bf16 copies them
    OpCase c = attention_op(2, 71, 2, 64, causal).on(kCuda).upstream_at(5);
    c.inputs[0] = c.inputs[0].at(3);
    c.name += " misaligned";
    add_case(c);
  }
  add_case(class_token_op(3, 4, 5, false).on(kAll));
  add_case(class_token_op(3, 4, 5, true).on(kAll));
  add_case(class_token_op(4, 196, 384, true).on(kCuda).det());  // ViT-S/16, the column sums over the batch
  for (int64_t t : {0, 4})
    add_case(shape_op("select_token " + std::to_string(t), [t](V v) { return select_token(v[0], t); },
                      {normal({3, 5, 4})}, fmt::format("x[0][:, {}]", t))
                 .on(kAll));

  // split / concat / permute / reshape
  add_case(OpCase{"split_last concat_last",
                  [](V v) {
                    auto p = split_last(v[0], {2, 3, 1});
                    return concat_last({mul(p[1], p[1]), p[0], scale(p[2], 3.0)});
                  },
                  {normal({2, 3, 6})},
                  "(lambda p: torch.cat([p[1] * p[1], p[0], p[2] * 3.0], -1))(torch.split(x[0], [2, 3, 1], -1))"}
               .on(kAll));
  add_case(split_reorder({2, 3, 6}, 2, 3).on(kAll));
  add_case(split_reorder({2, 7, 7, 13}, 5, 1).on(kCuda));
  add_case(split_reorder({2, 9, 11, 341}, 128, 85, 1).on(kCuda));  // a base width, 1 element off alignment
  add_case(split_piece({3, 4, 7}, 3).on(kAll));
  add_case(split_piece({2, 14, 14, 512}, 256).on(kCuda));
  add_case(concat2({2, 3, 4}, {2, 3, 2}).on(kAll));
  add_case(concat2({2, 7, 7, 13}, {2, 7, 7, 6}, 1).on(kCuda));
  add_case(concat2({2, 28, 28, 96}, {2, 28, 28, 160}).on(kCuda));
  add_case(permute_op({2, 3, 4, 5}, {0, 2, 3, 1}).on(kAll));  // nchw_to_nhwc
  add_case(OpCase{"nhwc_to_nchw of x*x",
                  [](V v) { return nhwc_to_nchw(mul(v[0], v[0])); },
                  {normal({2, 3, 4, 5})},
                  "(x[0] * x[0]).permute(0, 3, 1, 2)"}
               .on(kAll));
  add_case(permute_op({2, 3, 5, 7, 11}, {4, 0, 3, 1, 2}).on(kAll));
  add_case(permute_op({3, 3, 17, 13}, {0, 2, 3, 1}).on(kCuda));  // the model's NCHW -> NHWC input permute
  add_case(permute_op({2, 17, 13, 96}, {0, 3, 1, 2}, 3).on(kCuda));
  add_case(shape_op(
               "reshape [2, 3, 4, 5] -> [6, 20]",
               [](V v) {
                 return reshape(v[0], {6, 20});
               },
               {normal({2, 3, 4, 5})}, "x[0].reshape(6, 20)")
               .on(kAll));

  std::set<std::string> ids;
  for (auto& c : t) {
    if (c.seed == 0) c.seed = fnv1a(c.name) >> 16;
    MO_CHECK(ids.insert(case_id(c)).second, "op table: two cases named like '{}'", c.name);
    MO_CHECK(c.checks != 0 && c.fn, "op table: case '{}' runs nowhere", c.name);
    MO_CHECK(!(c.checks & kTorch) || !c.torch.empty(), "op table: case '{}' has no PyTorch expression", c.name);
  }
  return t;
}

}  // namespace

const std::vector<OpCase>& op_cases() {
  static const std::vector<OpCase> table = build();
  return table;
}

std::vector<OpCase> op_cases_with(Check c) {
  std::vector<OpCase> out;
  for (const auto& oc : op_cases())
    if (oc.checks & c) out.push_back(oc);
  return out;
}

std::string case_id(const OpCase& c) {
  std::string id;
  for (char ch : c.name) {
    bool ok = std::isalnum(static_cast<unsigned char>(ch));
    if (ok)
      id += ch;
    else if (!id.empty() && id.back() != '_')
      id += '_';
  }
  while (!id.empty() && id.back() == '_') id.pop_back();
  return id;
}

std::vector<Tensor> draw_inputs(const OpCase& c) {
  std::vector<Tensor> xs;
  for (size_t i = 0; i < c.inputs.size(); ++i) xs.push_back(c.inputs[i].draw(c.inputs[i].shape, c.seed + i));
  return xs;
}

Tensor draw_upstream(const OpCase& c, const Shape& y) { return randn(y, c.seed + 99, DType::f64); }

}  // namespace mo::test
