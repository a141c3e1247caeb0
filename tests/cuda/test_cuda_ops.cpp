// test_cuda_ops.cpp: CUDA-vs-CPU parity of every op with a CUDA kernel in ops/ (forward and
// backward through autograd), in float32 (tolerance 1e-4, max-abs scaled) and bfloat16 (2e-2 against
// the CPU run on the bf16-rounded inputs), plus bit-for-bit determinism of the backward passes.
// One harness (`compare`) runs an op on both devices, like ggml's test-backend-ops; each op adds a case.
// Every test skips where there is no GPU. Expects the defaults: MO_ALLOW_TF32 unset.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "autograd/cuda_allocator.h"
#include "autograd/graph.h"
#include "autograd/tensor.h"
#include "ops/activation/activation.h"
#include "ops/conv/conv2d.h"
#include "ops/shape/shape.h"
#include "ops/fused/layer_norm_linear.h"
#include "ops/elementwise/elementwise.h"
#include "ops/linear/linear.h"
#include "ops/loss/cross_entropy.h"
#include "ops/optim/adamw.h"
#include "ops/reduce/mean_hw.h"
#include "ops/regularize/drop_path.h"

using namespace mo;

namespace {

constexpr double kTolF32 = 1e-4, kTolBf16 = 2e-2;

Device gpu() { return Device::cuda(0); }

// Fresh N(0, std²) float32 data on the CPU from a fixed seed.
Tensor randn(const Shape& s, uint32_t seed, float std = 1.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, std);
  std::vector<float> v(shape_numel(s));
  for (auto& x : v) x = dist(gen);
  return Tensor::from_vector(v, s);
}
Tensor rand_uniform(const Shape& s, uint32_t seed, float lo, float hi) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(shape_numel(s));
  for (auto& x : v) x = dist(gen);
  return Tensor::from_vector(v, s);
}

// max |a − b| / max(max |b|, 1e-6), both read as float32 on the CPU. NaN anywhere fails.
::testing::AssertionResult close(const Tensor& a, const Tensor& b, double tol, const std::string& what) {
  if (a.defined() != b.defined())
    return ::testing::AssertionFailure() << what << ": one side undefined (" << a.str() << " vs " << b.str() << ")";
  if (!a.defined()) return ::testing::AssertionSuccess();
  if (a.shape() != b.shape())
    return ::testing::AssertionFailure() << what << ": shapes differ " << a.str() << " vs " << b.str();
  auto va = a.to_vector<float>(), vb = b.to_vector<float>();
  double diff = 0, scale = 1e-6;
  size_t worst = 0;
  for (size_t i = 0; i < va.size(); ++i) {
    double d = std::fabs(static_cast<double>(va[i]) - vb[i]);
    if (!(d <= diff)) {  // also catches NaN
      diff = std::isnan(d) ? INFINITY : d;
      worst = i;
    }
    scale = std::max(scale, std::fabs(static_cast<double>(vb[i])));
  }
  double err = diff / scale;
  if (err <= tol) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": relative error " << err << " > " << tol << " (" << a.str()
                                       << " vs " << b.str() << "; worst at " << worst << ": " << va[worst] << " vs "
                                       << vb[worst] << ", max |ref| " << scale << ")";
}

// Bit-for-bit equality (of the float32 view; bf16 -> f32 is exact).
::testing::AssertionResult identical(const Tensor& a, const Tensor& b, const std::string& what) {
  if (!a.defined() && !b.defined()) return ::testing::AssertionSuccess();
  if (a.defined() != b.defined() || a.shape() != b.shape())
    return ::testing::AssertionFailure() << what << ": " << a.str() << " vs " << b.str();
  auto va = a.to_vector<float>(), vb = b.to_vector<float>();
  for (size_t i = 0; i < va.size(); ++i)
    if (std::memcmp(&va[i], &vb[i], sizeof(float)) != 0)
      return ::testing::AssertionFailure() << what << ": differs at " << i << ": " << va[i] << " vs " << vb[i];
  return ::testing::AssertionSuccess();
}

using Fn = std::function<Tensor(const std::vector<Tensor>&)>;

// An op input: CPU float32 data; whether it needs a gradient; whether it stays float32 in a bf16 run;
// `offset` > 0 places the leaf that many elements into a larger buffer (a misaligned data pointer).
struct In {
  Tensor data;
  bool grad = true;
  bool keep_f32 = false;
  int64_t offset = 0;
};

struct Run {
  Tensor y;                  // output (as produced; compared through float32)
  std::vector<Tensor> grads;  // one per input (undefined where no grad)
};

Tensor round_to(const Tensor& t, DType dt) { return dt == DType::f32 ? t : t.to(dt).to(DType::f32); }

// Runs f on `dev`: in a bf16 run the CUDA inputs are bf16 and the CPU reference gets the same values
// (bf16-rounded) in float32. Backward with the random upstream gradient r (rounded the same way).
Run run_op(const Fn& f, const std::vector<In>& ins, const Tensor& r, Device dev, DType dt) {
  std::vector<Tensor> xs;
  for (const auto& in : ins) {
    DType d = in.keep_f32 ? DType::f32 : dt;
    Tensor x = dev.is_cpu() ? round_to(in.data, d).clone() : in.data.to(d).to(dev);
    if (in.offset > 0) {
      Tensor big = Tensor::zeros({x.numel() + in.offset}, x.dtype(), x.device());
      Tensor v = big.as_strided(x.shape(), contiguous_strides(x.shape()), in.offset);
      v.copy_(x);
      x = v;
    }
    if (in.grad) x.requires_grad_();
    xs.push_back(x);
  }
  Run out;
  out.y = f(xs);
  if (r.defined()) {
    Tensor rr = round_to(r, dt);
    out.y.backward(dev.is_cpu() ? rr : rr.to(out.y.dtype()).to(dev));
  }
  for (size_t i = 0; i < xs.size(); ++i) out.grads.push_back(ins[i].grad ? xs[i].grad() : Tensor());
  return out;
}

// The CUDA run (dtype dt) against the CPU run, output and every input gradient.
void compare(const std::string& name, const Fn& f, const std::vector<In>& ins, const Shape& y_shape, DType dt,
             double tol, uint32_t seed = 99) {
  SCOPED_TRACE(name + (dt == DType::bf16 ? " [bf16]" : " [f32]"));
  Tensor r = randn(y_shape, seed);
  Run ref = run_op(f, ins, r, Device::cpu(), dt);
  Run got = run_op(f, ins, r, gpu(), dt);
  ASSERT_TRUE(got.y.is_cuda());
  EXPECT_TRUE(close(got.y, ref.y, tol, name + " forward"));
  for (size_t i = 0; i < ins.size(); ++i) {
    if (!ins[i].grad) continue;
    ASSERT_TRUE(got.grads[i].defined()) << name << ": no CUDA gradient for input " << i;
    EXPECT_TRUE(got.grads[i].is_cuda());
    EXPECT_TRUE(close(got.grads[i], ref.grads[i], tol, name + " grad of input " + std::to_string(i)));
  }
}

void compare_both(const std::string& name, const Fn& f, const std::vector<In>& ins, const Shape& y_shape) {
  compare(name, f, ins, y_shape, DType::f32, kTolF32);
  compare(name, f, ins, y_shape, DType::bf16, kTolBf16);
}

// Runs forward + backward twice on the GPU and expects identical bits.
void expect_deterministic(const std::string& name, const Fn& f, const std::vector<In>& ins, const Shape& y_shape,
                          DType dt) {
  SCOPED_TRACE(name + (dt == DType::bf16 ? " [bf16]" : " [f32]"));
  Tensor r = randn(y_shape, 7);
  Run a = run_op(f, ins, r, gpu(), dt);
  Run b = run_op(f, ins, r, gpu(), dt);
  EXPECT_TRUE(identical(a.y, b.y, name + " forward"));
  for (size_t i = 0; i < ins.size(); ++i)
    EXPECT_TRUE(identical(a.grads[i], b.grads[i], name + " grad of input " + std::to_string(i)));
}

}  // namespace

// ---- linear / matmul ----------------------------------------------------------------------------

TEST(CudaOps, CudaLinearMambaOutShape) {
  if (!mo::cuda_available()) GTEST_SKIP();
  // (2·56·56, 96) -> 512 with bias: the fc1 of a stage-1 block.
  Fn f = [](const std::vector<Tensor>& v) { return linear(v[0], v[1], v[2]); };
  compare_both("linear 96->512", f, {{randn({2, 56, 56, 96}, 1)}, {randn({512, 96}, 2, 0.1f)}, {randn({512}, 3)}},
               {2, 56, 56, 512});
  // dW and db come from one GEMM (the BGRADB epilogue): same bits every run
  for (DType dt : {DType::f32, DType::bf16})
    expect_deterministic("linear 96->512", f,
                         {{randn({2, 56, 56, 96}, 4)}, {randn({512, 96}, 5, 0.1f)}, {randn({512}, 6)}},
                         {2, 56, 56, 512}, dt);
}

TEST(CudaOps, CudaLinearOddShapesNoBias) {
  if (!mo::cuda_available()) GTEST_SKIP();
  Fn f = [](const std::vector<Tensor>& v) { return linear(v[0], v[1], Tensor()); };
  compare_both("linear 13->5", f, {{randn({7, 13}, 4)}, {randn({5, 13}, 5)}}, {7, 5});
  Fn fb = [](const std::vector<Tensor>& v) { return linear(v[0], v[1], v[2]); };
  compare_both("linear 3x7x13->29", fb, {{randn({3, 7, 13}, 6)}, {randn({29, 13}, 7)}, {randn({29}, 8)}}, {3, 7, 29});
}

TEST(CudaOps, CudaLinearMisalignedPointers) {
  if (!mo::cuda_available()) GTEST_SKIP();
  // Input, weight and bias that start 1 element into their storage (not 16-byte aligned): exercises
  // the alignment preferences given to cuBLASLt and the bias pre-fill path instead of the epilogue.
  Fn f = [](const std::vector<Tensor>& v) { return linear(v[0], v[1], v[2]); };
  In x{randn({37, 24}, 9)}, w{randn({40, 24}, 10)}, b{randn({40}, 11)};
  x.offset = 1;
  w.offset = 3;
  b.offset = 1;
  compare_both("linear misaligned", f, {x, w, b}, {37, 40});
  // Odd leading dimensions (K = 13): rows of A are not 16-byte multiples either.
  In x2{randn({9, 13}, 12)}, w2{randn({11, 13}, 13)}, b2{randn({11}, 14)};
  compare_both("linear K=13", f, {x2, w2, b2}, {9, 11});
}

TEST(CudaOps, CudaLinearResidual) {
  if (!mo::cuda_available()) GTEST_SKIP();
  // fc2 + residual of a block (the residual read as cuBLASLt's C operand), an odd width, and a residual,
  // input and bias 1 element off alignment (the copy-then-accumulate paths)
  Fn f = [](const std::vector<Tensor>& v) { return linear_residual(v[0], v[1], v[2], v[3]); };
  compare_both("linear_residual 256->96", f,
               {{randn({2, 14, 14, 256}, 41)}, {randn({96, 256}, 42, 0.1f)}, {randn({96}, 43)}, {randn({2, 14, 14, 96}, 44)}},
               {2, 14, 14, 96});
  In x{randn({3, 5, 41}, 45)}, w{randn({13, 41}, 46, 0.1f)}, b{randn({13}, 47)}, r{randn({3, 5, 13}, 48)};
  x.offset = 1, b.offset = 1, r.offset = 1;
  compare_both("linear_residual 41->13 misaligned", f, {x, w, b, r}, {3, 5, 13});
  for (DType dt : {DType::f32, DType::bf16})
    expect_deterministic("linear_residual", f,
                         {{randn({2, 14, 14, 256}, 49)}, {randn({96, 256}, 50, 0.1f)}, {randn({96}, 51)},
                          {randn({2, 14, 14, 96}, 52)}},
                         {2, 14, 14, 96}, dt);
}

TEST(CudaOps, CudaLayerNormLinear) {
  if (!mo::cuda_available()) GTEST_SKIP();
  // fc1(norm(x)) of a block: stage-1 widths, an odd width, and an input 1 element off alignment
  Fn f = [](const std::vector<Tensor>& v) { return layer_norm_linear(v[0], v[1], v[2], 1e-6, v[3], v[4]); };
  compare_both("layer_norm_linear 96->512", f,
               {{randn({2, 14, 14, 96}, 21)}, {randn({96}, 22)}, {randn({96}, 23)}, {randn({512, 96}, 24, 0.1f)},
                {randn({512}, 25)}},
               {2, 14, 14, 512});
  In x{randn({3, 5, 7, 40}, 26)};
  x.offset = 1;
  compare_both("layer_norm_linear 40->82 misaligned", f,
               {x, {randn({40}, 27)}, {randn({40}, 28)}, {randn({82, 40}, 29, 0.1f)}, {randn({82}, 30)}}, {3, 5, 7, 82});
  for (DType dt : {DType::f32, DType::bf16})
    expect_deterministic("layer_norm_linear", f,
                         {{randn({2, 14, 14, 96}, 31)}, {randn({96}, 32)}, {randn({96}, 33)},
                          {randn({512, 96}, 34, 0.1f)}, {randn({512}, 35)}},
                         {2, 14, 14, 512}, dt);
}

TEST(CudaOps, CudaMatmul) {
  if (!mo::cuda_available()) GTEST_SKIP();
  Fn f = [](const std::vector<Tensor>& v) { return matmul(v[0], v[1]); };
  compare_both("matmul 33x17x29", f, {{randn({33, 17}, 15)}, {randn({17, 29}, 16)}}, {33, 29});
  compare_both("matmul 256x512x64", f, {{randn({256, 512}, 17)}, {randn({512, 64}, 18)}}, {256, 64});
}

// ---- conv2d --------------------------------------------------------------------------------------

namespace {
Fn conv_fn(int stride, int pad, bool bias) {
  return [=](const std::vector<Tensor>& v) { return conv2d(v[0], v[1], bias ? v[2] : Tensor(), stride, pad); };
}
Shape conv_out(const Shape& x, const Shape& w, int stride, int pad) {
  return {x[0], (x[1] + 2 * pad - w[2]) / stride + 1, (x[2] + 2 * pad - w[3]) / stride + 1, w[0]};
}
void conv_case(const std::string& name, const Shape& xs, const Shape& ws, int stride, int pad, bool bias,
               uint32_t seed) {
  std::vector<In> ins{{randn(xs, seed)}, {randn(ws, seed + 1, 0.2f)}};
  if (bias) ins.push_back({randn({ws[0]}, seed + 2)});
  compare_both(name, conv_fn(stride, pad, bias), ins, conv_out(xs, ws, stride, pad));
}
}  // namespace

TEST(CudaOps, CudaConv2dDownsample) {
  if (!mo::cuda_available()) GTEST_SKIP();
  conv_case("conv 3x3 s2 48->96", {2, 32, 32, 48}, {96, 48, 3, 3}, 2, 1, true, 20);
}

TEST(CudaOps, CudaConv2dStemAndOddShapes) {
  if (!mo::cuda_available()) GTEST_SKIP();
  conv_case("conv stem 3->13 on 31x31", {2, 31, 31, 3}, {13, 3, 3, 3}, 2, 1, true, 30);
  conv_case("conv 7x7 map 16->24", {2, 7, 7, 16}, {24, 16, 3, 3}, 2, 1, false, 40);
  conv_case("conv 2x2 s2 p0 on 7x7, 13 ch", {3, 7, 7, 13}, {8, 13, 2, 2}, 2, 0, true, 50);
  conv_case("conv 5x3 s1 p2", {1, 9, 6, 5}, {7, 5, 5, 3}, 1, 2, true, 60);
}

TEST(CudaOps, CudaConv2dVectorPathsAndMisalignment) {
  if (!mo::cuda_available()) GTEST_SKIP();
  // im2col / col2im take 16-byte chunks when Ci is a multiple of 16 / sizeof(T) and the pointers are
  // aligned: Ci = 4 (f32 vector, bf16 scalar; K = 36 pads to Kp = 40, so f32 rows end in a zero
  // chunk), 12 (f32 vector), 24 and 96 (both vector), each also 1 element off alignment (scalar path).
  for (int ci : {4, 12, 24, 96}) {
    for (int64_t off : {0, 1}) {
      In x{randn({2, 13, 11, ci}, 80 + ci)}, w{randn({ci + 8, ci, 3, 3}, 81 + ci, 0.2f)}, b{randn({ci + 8}, 82 + ci)};
      x.offset = off;
      compare_both("conv 3x3 s2 " + std::to_string(ci) + " ch, offset " + std::to_string(off), conv_fn(2, 1, true),
                   {x, w, b}, conv_out({2, 13, 11, ci}, {ci + 8, ci, 3, 3}, 2, 1));
    }
  }
  // stride 1 and 3 (tap stepping in the col2im gather), a 4x4 kernel with stride 3
  conv_case("conv 3x3 s1 p1 16 ch", {2, 9, 10, 16}, {8, 16, 3, 3}, 1, 1, true, 90);
  conv_case("conv 4x4 s3 p2 8 ch", {1, 14, 13, 8}, {16, 8, 4, 4}, 3, 2, true, 91);
  for (DType dt : {DType::f32, DType::bf16}) {
    expect_deterministic("conv 3x3 s2 48->96", conv_fn(2, 1, true),
                         {{randn({2, 32, 32, 48}, 92)}, {randn({96, 48, 3, 3}, 93, 0.2f)}, {randn({96}, 94)}},
                         {2, 16, 16, 96}, dt);
    expect_deterministic("conv stem 3->24", conv_fn(2, 1, true),
                         {{randn({2, 33, 31, 3}, 95)}, {randn({24, 3, 3, 3}, 96, 0.2f)}, {randn({24}, 97)}},
                         {2, 17, 16, 24}, dt);
  }
}

TEST(CudaOps, CudaConv2dNoInputGrad) {
  if (!mo::cuda_available()) GTEST_SKIP();
  // The image needs no gradient: the backward gets an undefined dx.
  std::vector<In> ins{{randn({2, 16, 16, 3}, 70), false}, {randn({8, 3, 3, 3}, 71, 0.2f)}, {randn({8}, 72)}};
  compare_both("conv no dx", conv_fn(2, 1, true), ins, {2, 8, 8, 8});
}

#ifdef MO_WITH_CUDA
namespace {
// The CUDA entry points (cuda::conv2d_forward / conv2d_backward, im2col + cuBLASLt) called directly, without
// autograd, against the CPU op.
void conv_entry_case(const std::string& name, const Shape& xs, const Shape& ws, int stride, int pad, bool bias,
                     bool need_dx, DType dt, double tol, uint32_t seed) {
  SCOPED_TRACE(name + (dt == DType::bf16 ? " [bf16]" : " [f32]"));
  Tensor x = randn(xs, seed), w = randn(ws, seed + 1, 0.2f), b = bias ? randn({ws[0]}, seed + 2) : Tensor();
  Shape ys = conv_out(xs, ws, stride, pad);
  Tensor r = round_to(randn(ys, seed + 3), dt);
  // CPU reference on the same (rounded) values
  Tensor xc = round_to(x, dt).clone().requires_grad_(), wc = round_to(w, dt).clone().requires_grad_();
  Tensor bc = bias ? round_to(b, dt).clone().requires_grad_() : Tensor();
  Tensor yc = conv2d(xc, wc, bc, stride, pad);
  yc.backward(r);
  // CUDA entry points
  Tensor xg = x.to(dt).to(gpu()), wg = w.to(dt).to(gpu()), bg = bias ? b.to(dt).to(gpu()) : Tensor();
  Tensor yg = Tensor::empty(ys, dt, gpu());
  cuda::conv2d_forward(xg, wg, bg, stride, pad, yg);
  Tensor dxg = need_dx ? Tensor::empty(xs, dt, gpu()) : Tensor();
  Tensor dwg = Tensor::empty(ws, dt, gpu());
  Tensor dbg = bias ? Tensor::empty({ws[0]}, dt, gpu()) : Tensor();
  cuda::conv2d_backward(r.to(dt).to(gpu()), xg, wg, stride, pad, dxg, dwg, dbg);
  EXPECT_TRUE(close(yg, yc, tol, "y"));
  if (need_dx) EXPECT_TRUE(close(dxg, xc.grad(), tol, "dx"));
  EXPECT_TRUE(close(dwg, wc.grad(), tol, "dw"));
  if (bias) EXPECT_TRUE(close(dbg, bc.grad(), tol, "db"));
}
void conv_entry_cases() {
  for (auto [dt, tol] : {std::pair<DType, double>{DType::f32, kTolF32}, {DType::bf16, kTolBf16}}) {
    conv_entry_case("3x3 s2 48->96", {2, 32, 32, 48}, {96, 48, 3, 3}, 2, 1, true, true, dt, tol, 300);
    conv_entry_case("stem 3->13 on 31x31, no dx", {2, 31, 31, 3}, {13, 3, 3, 3}, 2, 1, true, false, dt, tol, 310);
    conv_entry_case("2x2 s2 p0 on 7x7, 13 ch", {3, 7, 7, 13}, {8, 13, 2, 2}, 2, 0, false, true, dt, tol, 320);
    conv_entry_case("5x3 s1 p2", {1, 9, 6, 5}, {7, 5, 5, 3}, 1, 2, true, true, dt, tol, 330);
  }
}
}  // namespace
#endif

TEST(CudaOps, CudaConv2dEntryPoints) {
  if (!mo::cuda_available()) GTEST_SKIP();
#ifdef MO_WITH_CUDA
  conv_entry_cases();
#endif
}

// ---- strided copies (Tensor::contiguous / copy_ / to on CUDA) and the shape ops built on them ----------

TEST(CudaOps, CudaStridedCopiesMatchCpu) {
  if (!mo::cuda_available()) GTEST_SKIP();
  // the model's NCHW → NHWC input permute, a 5-d permute with odd sizes, a view that starts 3 elements in,
  // and copies that convert f32 <-> bf16 on the way
  struct Case {
    Shape shape;
    std::vector<int64_t> perm;
    int64_t offset;
  };
  for (const Case& c : {Case{{3, 3, 17, 13}, {0, 2, 3, 1}, 0}, Case{{2, 3, 5, 7, 11}, {4, 0, 3, 1, 2}, 0},
                        Case{{4, 9, 6}, {2, 0, 1}, 3}}) {
    int64_t n = 1;
    for (auto d : c.shape) n *= d;
    Tensor base = randn({n + c.offset}, 200 + static_cast<uint32_t>(c.offset));
    Tensor gbase = base.to(gpu());
    Tensor x = base.as_strided(c.shape, contiguous_strides(c.shape), c.offset);
    Tensor gx = gbase.as_strided(c.shape, contiguous_strides(c.shape), c.offset);
    Tensor want = permute(x, c.perm).contiguous();
    Tensor got = permute(gx, c.perm).contiguous();
    EXPECT_TRUE(identical(got.to(Device::cpu()), want, "permute " + shape_str(c.shape)));
    Tensor got16 = permute(gx, c.perm).to(DType::bf16).contiguous();
    Tensor want16 = want.to(DType::bf16);
    EXPECT_TRUE(identical(got16.to(Device::cpu()), want16, "permute to bf16 " + shape_str(c.shape)));
    Tensor back = permute(got16, c.perm).to(DType::f32).contiguous();  // strided bf16 -> f32
    EXPECT_TRUE(identical(back.to(Device::cpu()), permute(want16, c.perm).to(DType::f32).contiguous(),
                          "bf16 strided to f32 " + shape_str(c.shape)));
  }
}

// ---- elementwise / activation / reductions ------------------------------------------------------

TEST(CudaOps, CudaAddMulScale) {
  if (!mo::cuda_available()) GTEST_SKIP();
  for (const Shape& s : {Shape{2, 7, 7, 13}, Shape{2, 56, 56, 96}}) {
    std::string tag = shape_str(s);
    compare_both("add " + tag, [](const std::vector<Tensor>& v) { return add(v[0], v[1]); },
                 {{randn(s, 100)}, {randn(s, 101)}}, s);
    compare_both("mul " + tag, [](const std::vector<Tensor>& v) { return mul(v[0], v[1]); },
                 {{randn(s, 102)}, {randn(s, 103)}}, s);
    compare_both("scale " + tag, [](const std::vector<Tensor>& v) { return scale(v[0], -0.37); }, {{randn(s, 104)}}, s);
  }
}

TEST(CudaOps, CudaMulChannel) {
  if (!mo::cuda_available()) GTEST_SKIP();
  Fn f = [](const std::vector<Tensor>& v) { return mul_channel(v[0], v[1]); };
  compare_both("mul_channel C=13", f, {{randn({2, 7, 7, 13}, 110)}, {randn({13}, 111)}}, {2, 7, 7, 13});
  compare_both("mul_channel C=96", f, {{randn({2, 56, 56, 96}, 112)}, {randn({96}, 113)}}, {2, 56, 56, 96});
}

TEST(CudaOps, CudaGeluSilu) {
  if (!mo::cuda_available()) GTEST_SKIP();
  for (const Shape& s : {Shape{3, 7, 7, 13}, Shape{2, 56, 56, 96}}) {
    std::string tag = shape_str(s);
    compare_both("gelu " + tag, [](const std::vector<Tensor>& v) { return gelu(v[0]); }, {{randn(s, 120, 2.0f)}}, s);
    compare_both("silu " + tag, [](const std::vector<Tensor>& v) { return silu(v[0]); }, {{randn(s, 121, 2.0f)}}, s);
  }
}

TEST(CudaOps, CudaMeanHw) {
  if (!mo::cuda_available()) GTEST_SKIP();
  Fn f = [](const std::vector<Tensor>& v) { return mean_hw(v[0]); };
  compare_both("mean_hw 7x7x13", f, {{randn({2, 7, 7, 13}, 130)}}, {2, 13});
  compare_both("mean_hw 7x7x768", f, {{randn({3, 7, 7, 768}, 131)}}, {3, 768});
  compare_both("mean_hw 56x56x96", f, {{randn({4, 56, 56, 96}, 132)}}, {4, 96});  // multi-chunk reduction
}

// ---- drop_path -----------------------------------------------------------------------------------

TEST(CudaOps, CudaDropPathBitIdenticalToCpu) {
  if (!mo::cuda_available()) GTEST_SKIP();
  const int64_t B = 64;
  Fn f = [](const std::vector<Tensor>& v) { return drop_path(v[0], 0.5, true, 1234, 7); };
  for (const Shape& s : {Shape{B, 7, 7, 13}, Shape{B, 4, 4, 96}}) {
    compare(shape_str(s), f, {{randn(s, 140)}}, s, DType::f32, 0.0);  // exact: same draws, same product
    compare(shape_str(s), f, {{randn(s, 141)}}, s, DType::bf16, kTolBf16);
  }
  // The draw itself: rows are all-zero exactly where drop_path_scales says so.
  auto scales = drop_path_scales(B, 0.5, 1234, 7);
  Tensor x = Tensor::full({B, 5}, 1.0, DType::f32, gpu());
  auto y = drop_path(x, 0.5, true, 1234, 7).to_vector<float>();
  int dropped = 0;
  for (int64_t b = 0; b < B; ++b) {
    EXPECT_EQ(y[b * 5], scales[b]) << "row " << b;
    dropped += scales[b] == 0.0f;
  }
  EXPECT_GT(dropped, 0);
  EXPECT_LT(dropped, B);
}

// ---- cross-entropy -------------------------------------------------------------------------------

namespace {
Tensor soft_targets(int64_t B, int64_t N, uint32_t seed) {  // rows of positive weights summing to 1
  auto v = rand_uniform({B, N}, seed, 0.0f, 1.0f).to_vector<float>();
  for (int64_t b = 0; b < B; ++b) {
    float s = 0;
    for (int64_t j = 0; j < N; ++j) s += v[b * N + j];
    for (int64_t j = 0; j < N; ++j) v[b * N + j] /= s;
  }
  return Tensor::from_vector(v, {B, N});
}
}  // namespace

TEST(CudaOps, CudaSoftTargetCrossEntropy) {
  if (!mo::cuda_available()) GTEST_SKIP();
  Fn f = [](const std::vector<Tensor>& v) { return soft_target_cross_entropy(v[0], v[1]); };
  for (auto [B, N] : {std::pair<int64_t, int64_t>{8, 1000}, {5, 13}, {300, 100}}) {
    std::string tag = std::to_string(B) + "x" + std::to_string(N);
    compare_both("ce " + tag, f, {{randn({B, N}, 150, 3.0f)}, {soft_targets(B, N, 151), false}}, {});
    // bf16 logits with float32 targets (the mixup targets stay f32)
    compare("ce f32 target " + tag, f, {{randn({B, N}, 152, 3.0f)}, {soft_targets(B, N, 153), false, true}}, {},
            DType::bf16, kTolBf16);
  }
}

// ---- AdamW ---------------------------------------------------------------------------------------

TEST(CudaOps, CudaAdamWMatchesCpu) {
  if (!mo::cuda_available()) GTEST_SKIP();
  // Segments with odd offsets and sizes, one over the 65536-element chunk size, a tail left alone.
  const int64_t N = 74120;
  std::vector<AdamWSegment> segs{{0, 70001, true}, {70001, 13, false}, {70014, 4099, true}};
  for (DType gdt : {DType::f32, DType::bf16}) {
    SCOPED_TRACE(std::string("grad ") + dtype_name(gdt));
    Tensor p = randn({N}, 160), m = randn({N}, 161, 0.01f), v = rand_uniform({N}, 162, 0.0f, 1e-3f);
    Tensor pc = p.clone(), mc = m.clone(), vc = v.clone(), p16c = Tensor::zeros({N}, DType::bf16);
    Tensor pg = p.to(gpu()), mg = m.to(gpu()), vg = v.to(gpu()), p16g = Tensor::zeros({N}, DType::bf16, gpu());
    for (int64_t step = 1; step <= 3; ++step) {
      Tensor g = randn({N}, 170 + static_cast<uint32_t>(step), 0.1f).to(gdt);
      AdamWHyper hp;
      hp.lr = 1e-2;
      hp.weight_decay = 0.05;
      hp.step = step;
      hp.grad_scale = 0.5;
      adamw_step(pc, g, mc, vc, segs, hp, p16c);
      adamw_step(pg, g.to(gpu()), mg, vg, segs, hp, p16g);
    }
    // Same fp32 operations in the same order: equal up to the last bit in practice; allow 1e-6.
    EXPECT_TRUE(close(pg, pc, 1e-6, "param"));
    EXPECT_TRUE(close(mg, mc, 1e-6, "m"));
    EXPECT_TRUE(close(vg, vc, 1e-6, "v"));
    EXPECT_TRUE(close(p16g, p16c, 1e-6, "param bf16"));
    // The tail outside every segment is untouched.
    auto pv = pg.to_vector<float>(), p0 = p.to_vector<float>();
    for (int64_t i = 74113; i < N; ++i) EXPECT_EQ(pv[i], p0[i]) << "element " << i;
  }
}

// ---- gradient accumulation into fp32 buffers ------------------------------------------------------

TEST(CudaOps, CudaAddBf16IntoF32) {
  if (!mo::cuda_available()) GTEST_SKIP();
  Tensor dst = randn({3, 1001}, 180), src = randn({3, 1001}, 181).to(DType::bf16);
  Tensor ref = dst.clone();
  ref.add_(src.to(DType::f32), 0.5);
  Tensor d = dst.to(gpu());
  d.add_(src.to(gpu()), 0.5);
  EXPECT_EQ(d.dtype(), DType::f32);
  EXPECT_TRUE(close(d, ref, 1e-6, "add_ bf16 into f32"));
}

// ---- determinism -----------------------------------------------------------------------------------

TEST(CudaOps, CudaBackwardIsDeterministic) {
  if (!mo::cuda_available()) GTEST_SKIP();
  for (DType dt : {DType::f32, DType::bf16}) {
    expect_deterministic("linear", [](const std::vector<Tensor>& v) { return linear(v[0], v[1], v[2]); },
                         {{randn({2, 56, 56, 96}, 200)}, {randn({384, 96}, 201)}, {randn({384}, 202)}},
                         {2, 56, 56, 384}, dt);
    expect_deterministic("conv2d", conv_fn(2, 1, true),
                         {{randn({2, 32, 32, 48}, 210)}, {randn({96, 48, 3, 3}, 211)}, {randn({96}, 212)}},
                         {2, 16, 16, 96}, dt);
    expect_deterministic("mul_channel", [](const std::vector<Tensor>& v) { return mul_channel(v[0], v[1]); },
                         {{randn({4, 56, 56, 96}, 220)}, {randn({96}, 221)}}, {4, 56, 56, 96}, dt);
    expect_deterministic("mean_hw", [](const std::vector<Tensor>& v) { return mean_hw(v[0]); },
                         {{randn({4, 56, 56, 96}, 230)}}, {4, 96}, dt);
    expect_deterministic("cross-entropy",
                         [](const std::vector<Tensor>& v) { return soft_target_cross_entropy(v[0], v[1]); },
                         {{randn({64, 1000}, 240)}, {soft_targets(64, 1000, 241), false}}, {}, dt);
  }
}

// ---- errors ------------------------------------------------------------------------------------------

TEST(CudaOps, CudaRejectsFloat64WithClearMessage) {
  if (!mo::cuda_available()) GTEST_SKIP();
  Tensor x = randn({4, 8}, 250).to(DType::f64).to(gpu());
  try {
    gelu(x);
    FAIL() << "gelu accepted a float64 CUDA tensor";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("float64"), std::string::npos) << e.what();
  }
  Tensor w = randn({3, 8}, 251).to(DType::f64).to(gpu());
  EXPECT_THROW(linear(x, w, Tensor()), Error);
}
