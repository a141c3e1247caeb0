// test_cuda_fused.cpp: CUDA-vs-CPU parity of the fused, memory-bound kernels (layer_norm, dwconv2d,
// gated_dwconv; ops/norm/layer_norm.cu, ops/conv/dwconv2d.cu, ops/fused/gated_dwconv.cu), forward and
// backward through the public ops and autograd, plus bit-identical results across two runs.
// The reference is the CPU op in float64 on the very values the GPU sees (inputs rounded to the GPU
// dtype first), so only the GPU's arithmetic is measured: float32 to 1e-4, bfloat16 to 2e-2 (max |error|
// over max |reference|). Shapes cover both kernel paths (16-byte vectors and the scalar / 4-byte
// fallbacks: 13 channels, h = 341 with cc = 128 as in mambaout_base, offset views whose pointers are
// misaligned), maps that the 7×7 and 14×7 tiles do not divide, B = 1..3, every stage width of
// femto / tiny / base / padded base with both activations, and MambaOut stage shapes at small batch.
// The gate's forward is also checked without grad (inference: no conv output kept). Every test skips
// without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "autograd/cuda_allocator.h"
#include "autograd/graph.h"
#include "autograd/tensor.h"
#include "ops/conv/dwconv2d.h"
#include "ops/fused/gated_dwconv.h"
#include "ops/norm/layer_norm.h"

using namespace mo;

namespace {

constexpr double kTolF32 = 1e-4, kTolBf16 = 2e-2;

// One random input: `gpu` in the tested dtype on cuda:0 (a leaf), `ref` the same (rounded) values as
// a float64 CPU leaf. Fresh N(0, std²) data from a fixed-seed std::mt19937 (never zeros).
struct Pair {
  Tensor gpu, ref;
};
Pair make(const Shape& s, uint32_t seed, DType dt, double std = 1.0, double mean = 0.0, bool grad = true) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> dist(mean, std);
  std::vector<double> v(shape_numel(s));
  for (auto& x : v) x = dist(gen);
  Tensor host = Tensor::from_vector(v, s);
  Pair p{host.to(dt).to(Device::cuda(0)), Tensor()};
  p.ref = p.gpu.to(Device::cpu()).to(DType::f64);
  if (grad) {
    p.gpu.requires_grad_();
    p.ref.requires_grad_();
  }
  return p;
}

// max |a − b| / max(max |b|, 1e-12) on the CPU in float64; NaN anywhere fails.
::testing::AssertionResult close(const Tensor& a, const Tensor& b, double tol, const std::string& what) {
  if (!a.defined() || !b.defined())
    return ::testing::AssertionFailure() << what << ": undefined tensor (gradient did not flow?)";
  if (a.numel() != b.numel())
    return ::testing::AssertionFailure() << what << ": sizes differ " << a.str() << " vs " << b.str();
  auto va = a.to_vector<double>(), vb = b.to_vector<double>();
  double diff = 0, scale = 1e-12;
  size_t worst = 0;
  for (size_t i = 0; i < va.size(); ++i) {
    double d = std::fabs(va[i] - vb[i]);
    if (!(d <= diff)) {
      diff = std::isnan(d) ? INFINITY : d;
      worst = i;
    }
    scale = std::max(scale, std::fabs(vb[i]));
  }
  const double err = diff / scale;
  if (err <= tol) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": relative error " << err << " > " << tol << " (" << a.str()
                                       << "; worst at " << worst << ": " << va[worst] << " vs " << vb[worst]
                                       << ", max |ref| " << scale << ")";
}

::testing::AssertionResult identical(const Tensor& a, const Tensor& b, const std::string& what) {
  auto va = a.to_vector<float>(), vb = b.to_vector<float>();  // bf16 -> f32 is exact
  if (va.size() != vb.size() || std::memcmp(va.data(), vb.data(), va.size() * sizeof(float)) != 0)
    return ::testing::AssertionFailure() << what << ": two runs differ (" << a.str() << ")";
  return ::testing::AssertionSuccess();
}

double tol_for(DType dt) { return dt == DType::bf16 ? kTolBf16 : kTolF32; }
std::string tag(DType dt, const Shape& s) { return std::string(dtype_name(dt)) + " " + shape_str(s); }

// ---- layer_norm ---------------------------------------------------------------------------------------
void check_layer_norm(const Shape& xs, DType dt, uint32_t seed) {
  const int64_t C = xs.back();
  auto x = make(xs, seed, dt, 1.5, 0.3), w = make({C}, seed + 1, dt, 1.0, 1.0), b = make({C}, seed + 2, dt);
  auto r = make(xs, seed + 3, dt, 1.0, 0.0, false);
  Tensor y = layer_norm(x.gpu, w.gpu, b.gpu, 1e-6);
  y.backward(r.gpu);
  Tensor yr = layer_norm(x.ref, w.ref, b.ref, 1e-6);
  yr.backward(r.ref);
  const double tol = tol_for(dt);
  const std::string t = "layer_norm " + tag(dt, xs);
  EXPECT_TRUE(close(y, yr, tol, t + " y"));
  EXPECT_TRUE(close(x.gpu.grad(), x.ref.grad(), tol, t + " dx"));
  EXPECT_TRUE(close(w.gpu.grad(), w.ref.grad(), tol, t + " dw"));
  EXPECT_TRUE(close(b.gpu.grad(), b.ref.grad(), tol, t + " db"));
}

// ---- dwconv2d -----------------------------------------------------------------------------------------
void check_dwconv(const Shape& xs, DType dt, uint32_t seed) {
  const int64_t C = xs[3];
  auto x = make(xs, seed, dt), w = make({C, 1, 7, 7}, seed + 1, dt, 0.2), b = make({C}, seed + 2, dt);
  auto r = make(xs, seed + 3, dt, 1.0, 0.0, false);
  Tensor y = dwconv2d(x.gpu, w.gpu, b.gpu, 3);
  y.backward(r.gpu);
  Tensor yr = dwconv2d(x.ref, w.ref, b.ref, 3);
  yr.backward(r.ref);
  const double tol = tol_for(dt);
  const std::string t = "dwconv2d " + tag(dt, xs);
  EXPECT_TRUE(close(y, yr, tol, t + " y"));
  EXPECT_TRUE(close(x.gpu.grad(), x.ref.grad(), tol, t + " dx"));
  EXPECT_TRUE(close(w.gpu.grad(), w.ref.grad(), tol, t + " dw"));
  EXPECT_TRUE(close(b.gpu.grad(), b.ref.grad(), tol, t + " db"));
}

// ---- gated_dwconv -------------------------------------------------------------------------------------
// z and the upstream gradient may start `offset` elements into their storage (an offset view: every
// pointer misaligned for offset % 8 != 0, so the kernels take their 1-element items).
void check_gated(int64_t B, int64_t H, int64_t W, int64_t h, int64_t cc, Act act, DType dt, uint32_t seed,
                 int64_t offset = 0) {
  const Shape zs{B, H, W, 2 * h}, ms{B, H, W, h};
  auto zb = make({shape_numel(zs) + offset}, seed, dt, 1.0, 0.0, false);
  auto rb = make({shape_numel(ms) + offset}, seed + 3, dt, 1.0, 0.0, false);
  const Shape zst = contiguous_strides(zs), mst = contiguous_strides(ms);
  Tensor zg = zb.gpu.as_strided(zs, zst, offset), zr = zb.ref.as_strided(zs, zst, offset).contiguous();
  zg.requires_grad_();
  zr.requires_grad_();
  Tensor rg = rb.gpu.as_strided(ms, mst, offset), rr = rb.ref.as_strided(ms, mst, offset).contiguous();
  auto w = make({cc, 1, 7, 7}, seed + 1, dt, 0.2), b = make({cc}, seed + 2, dt);
  Tensor m = gated_dwconv(zg, w.gpu, b.gpu, h, act);
  m.backward(rg);
  Tensor mr = gated_dwconv(zr, w.ref, b.ref, h, act);
  mr.backward(rr);
  const double tol = tol_for(dt);
  const std::string t = std::string("gated_dwconv ") + act_name(act) + " " + tag(dt, zs) + " h " +
                        std::to_string(h) + " cc " + std::to_string(cc) + " offset " + std::to_string(offset);
  EXPECT_TRUE(close(m, mr, tol, t + " m"));
  {  // inference: no backward will run, so the kernel writes no conv output; m is the same bits
    NoGradGuard ng;
    EXPECT_TRUE(identical(gated_dwconv(zg, w.gpu, b.gpu, h, act), m, t + " m without grad"));
  }
  EXPECT_TRUE(close(zg.grad(), zr.grad(), tol, t + " dz"));
  if (cc > 0) {
    EXPECT_TRUE(close(w.gpu.grad(), w.ref.grad(), tol, t + " dw"));
    EXPECT_TRUE(close(b.gpu.grad(), b.ref.grad(), tol, t + " db"));
  }
}

}  // namespace

TEST(CudaFused, CudaLayerNormF32) {
  if (!mo::cuda_available()) GTEST_SKIP();
  // fast path at every row-group width (C/4 vectors: 12 → 4 lanes, 24 → 8, 48 → 16, 96/144/192/256
  // → 32 lanes × 4/6/8), the fallback (13, 1152 > 1024) and a row count that fills no block evenly
  for (int64_t C : {48, 96, 192, 384, 576, 768, 1024, 13, 1152})
    check_layer_norm({37, C}, DType::f32, 100 + static_cast<uint32_t>(C));
  check_layer_norm({2, 7, 7, 96}, DType::f32, 7);
}

TEST(CudaFused, CudaLayerNormBf16) {
  if (!mo::cuda_available()) GTEST_SKIP();
  for (int64_t C : {48, 96, 128, 256, 288, 512, 576, 768, 1024, 13, 2304})
    check_layer_norm({37, C}, DType::bf16, 200 + static_cast<uint32_t>(C));
}

TEST(CudaFused, CudaLayerNormStageShapes) {
  if (!mo::cuda_available()) GTEST_SKIP();
  check_layer_norm({2, 56, 56, 96}, DType::bf16, 11);  // tiny stage 1 (6272 rows: many row groups per block)
  check_layer_norm({2, 56, 56, 96}, DType::f32, 12);
  check_layer_norm({3, 7, 7, 576}, DType::bf16, 13);  // tiny stage 4
}

TEST(CudaFused, CudaLayerNormMisalignedRows) {
  if (!mo::cuda_available()) GTEST_SKIP();
  // x starts one element into its storage: not 16-byte aligned -> the fallback kernels
  for (DType dt : {DType::f32, DType::bf16}) {
    const int64_t R = 21, C = 96;
    auto base = make({R * C + 1}, 31, dt, 1.0, 0.0, false);
    Tensor xg = base.gpu.as_strided({R, C}, {C, 1}, 1);
    xg.requires_grad_();
    Tensor xr = base.ref.as_strided({R, C}, {C, 1}, 1).contiguous();
    xr.requires_grad_();
    auto w = make({C}, 32, dt, 1.0, 1.0), b = make({C}, 33, dt);
    auto r = make({R, C}, 34, dt, 1.0, 0.0, false);
    Tensor y = layer_norm(xg, w.gpu, b.gpu, 1e-6);
    y.backward(r.gpu);
    Tensor yr = layer_norm(xr, w.ref, b.ref, 1e-6);
    yr.backward(r.ref);
    const double tol = tol_for(dt);
    EXPECT_TRUE(close(y, yr, tol, std::string("misaligned layer_norm y ") + dtype_name(dt)));
    EXPECT_TRUE(close(xg.grad(), xr.grad(), tol, std::string("misaligned layer_norm dx ") + dtype_name(dt)));
    EXPECT_TRUE(close(w.gpu.grad(), w.ref.grad(), tol, std::string("misaligned layer_norm dw ") + dtype_name(dt)));
  }
}

TEST(CudaFused, CudaDwconv2dOddShapes) {
  if (!mo::cuda_available()) GTEST_SKIP();
  for (DType dt : {DType::f32, DType::bf16}) {
    check_dwconv({2, 7, 7, 13}, dt, 40);     // one partial channel block, scalar loads
    check_dwconv({1, 9, 11, 40}, dt, 41);    // maps the 7×7 tiles do not divide; 40 = 32 + 8
    check_dwconv({3, 5, 3, 34}, dt, 42);     // map smaller than a tile; 4-byte bf16 items
    check_dwconv({2, 14, 14, 48}, dt, 43);   // femto stage 1 channels: a half-used channel block
  }
}

TEST(CudaFused, CudaDwconv2dStageShapes) {
  if (!mo::cuda_available()) GTEST_SKIP();
  check_dwconv({2, 56, 56, 96}, DType::bf16, 50);  // tiny stage 1
  check_dwconv({2, 56, 56, 96}, DType::f32, 51);
  check_dwconv({2, 28, 28, 192}, DType::bf16, 52);  // tiny stage 2
  check_dwconv({4, 7, 7, 576}, DType::f32, 53);     // tiny stage 4
  check_dwconv({4, 7, 7, 576}, DType::bf16, 54);
}

TEST(CudaFused, CudaGatedDwconvOddShapes) {
  if (!mo::cuda_available()) GTEST_SKIP();
  for (DType dt : {DType::f32, DType::bf16}) {
    check_gated(2, 7, 7, 20, 13, Act::gelu, dt, 60);     // odd widths: 1-element items everywhere
    check_gated(2, 7, 7, 341, 128, Act::gelu, dt, 61);   // mambaout_base stage 1 (h = int(8/3·128))
    check_gated(1, 9, 10, 32, 32, Act::silu, dt, 62);    // cc = h: no identity channels
    check_gated(2, 11, 6, 96, 40, Act::silu, dt, 63);    // vectors with a partial channel block
    check_gated(3, 15, 9, 64, 24, Act::gelu, dt, 64);    // 14×7 tiles divide neither side; B = 3
    check_gated(1, 29, 22, 48, 16, Act::silu, dt, 65);   // several tiles each way, partial last ones
    check_gated(2, 5, 3, 40, 8, Act::gelu, dt, 66);      // map smaller than one tile
  }
}

TEST(CudaFused, CudaGatedDwconvMisaligned) {
  if (!mo::cuda_available()) GTEST_SKIP();
  for (DType dt : {DType::f32, DType::bf16}) {
    check_gated(2, 9, 11, 256, 96, Act::gelu, dt, 90, 1);  // tiny's widths, every pointer off by one
    check_gated(1, 14, 7, 128, 48, Act::silu, dt, 91, 3);
    check_gated(2, 8, 8, 344, 128, Act::gelu, dt, 92, 4);  // 8-byte (bf16) / 16-byte (f32) aligned
  }
}

// Every stage width (h = int(8/3·C), cc = C) of mambaout_femto, tiny/small, base and padded base.
TEST(CudaFused, CudaGatedDwconvStageWidths) {
  if (!mo::cuda_available()) GTEST_SKIP();
  const int64_t widths[][2] = {{128, 48},   {256, 96},   {512, 192},  {768, 288},  {1024, 384}, {1536, 576},
                               {341, 128},  {682, 256},  {1365, 512}, {2048, 768}, {344, 128},  {688, 256},
                               {1368, 512}};
  uint32_t seed = 300;
  for (auto& wd : widths)
    for (DType dt : {DType::f32, DType::bf16})
      for (Act act : {Act::gelu, Act::silu}) check_gated(1, 9, 8, wd[0], wd[1], act, dt, seed++);
}

TEST(CudaFused, CudaGatedDwconvStageShapes) {
  if (!mo::cuda_available()) GTEST_SKIP();
  check_gated(2, 56, 56, 256, 96, Act::gelu, DType::bf16, 70);  // tiny stage 1
  check_gated(2, 56, 56, 256, 96, Act::gelu, DType::f32, 71);
  check_gated(2, 28, 28, 512, 192, Act::silu, DType::bf16, 75);  // tiny stage 2
  check_gated(2, 7, 7, 1536, 576, Act::gelu, DType::bf16, 72);  // tiny stage 4
  check_gated(2, 7, 7, 1536, 576, Act::silu, DType::f32, 73);
  check_gated(2, 14, 14, 960, 384, Act::silu, DType::bf16, 74);  // rw-style stage 3: h = 2.5·C, cc = C
}

TEST(CudaFused, CudaFusedBackwardIsDeterministic) {
  if (!mo::cuda_available()) GTEST_SKIP();
  for (DType dt : {DType::f32, DType::bf16}) {
    // many tiles / rows per slice, so the partial sums really are split across blocks
    auto x = make({4, 28, 28, 96}, 80, dt), w = make({96, 1, 7, 7}, 81, dt, 0.2), b = make({96}, 82, dt);
    auto r = make({4, 28, 28, 96}, 83, dt, 1.0, 0.0, false);
    auto z = make({4, 28, 28, 512}, 84, dt), lw = make({96}, 85, dt, 1.0, 1.0);
    auto rm = make({4, 28, 28, 256}, 86, dt, 1.0, 0.0, false);
    std::vector<Tensor> runs[2];
    for (auto& out : runs) {
      for (Tensor* t : {&x.gpu, &w.gpu, &b.gpu, &z.gpu, &lw.gpu}) t->set_grad(Tensor());
      dwconv2d(x.gpu, w.gpu, b.gpu, 3).backward(r.gpu);
      out.push_back(w.gpu.grad().clone());
      out.push_back(b.gpu.grad().clone());
      w.gpu.set_grad(Tensor());
      b.gpu.set_grad(Tensor());
      Tensor m = gated_dwconv(z.gpu, w.gpu, b.gpu, 256, Act::gelu);
      m.backward(rm.gpu);
      out.push_back(m.detach().clone());
      out.push_back(w.gpu.grad().clone());
      out.push_back(b.gpu.grad().clone());
      out.push_back(z.gpu.grad().clone());
      layer_norm(x.gpu, lw.gpu, b.gpu, 1e-6).backward(r.gpu);
      out.push_back(lw.gpu.grad().clone());
    }
    const char* names[] = {"dwconv2d dw", "dwconv2d db", "gated m",      "gated dw",
                           "gated db",    "gated dz",    "layer_norm dw"};
    for (size_t i = 0; i < runs[0].size(); ++i)
      EXPECT_TRUE(identical(runs[0][i], runs[1][i], std::string(names[i]) + " " + dtype_name(dt)));
  }
}
