// test_cuda_gated_linear.cpp: the fused r + fc2(gate(z)) node (ops/fused/gated_dwconv_linear) on CUDA:
// (1) the same bits as the unfused linear_residual(gated_dwconv(z), ...) on the GPU, output and every
// gradient (the backward's recomputed m equals the forward's m); (2) within the dtype's tolerance of
// the CPU float64 op on the same rounded values; (3) bit-identical across two runs. Fresh random data;
// widths that take the 16-byte paths and ones that do not (odd h, cc), tiny's stage-1 widths. Skips
// without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "autograd/cuda_allocator.h"
#include "autograd/tensor.h"
#include "ops/fused/gated_dwconv.h"
#include "ops/fused/gated_dwconv_linear.h"
#include "ops/linear/linear.h"

using namespace mo;

namespace {

Tensor host_randn(const Shape& s, uint32_t seed, double std) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> dist(0.0, std);
  std::vector<double> v(shape_numel(s));
  for (auto& x : v) x = dist(gen);
  return Tensor::from_vector(v, s);
}

bool same_bits(const Tensor& a, const Tensor& b) {
  auto va = a.to_vector<float>(), vb = b.to_vector<float>();  // bf16 -> f32 is exact
  return va.size() == vb.size() && std::memcmp(va.data(), vb.data(), va.size() * sizeof(float)) == 0;
}

double rel_err(const Tensor& a, const Tensor& b) {  // max |a − b| / max |b|, NaN -> inf
  auto va = a.to_vector<double>(), vb = b.to_vector<double>();
  double d = 0, s = 1e-12;
  for (size_t i = 0; i < va.size(); ++i) {
    const double e = std::fabs(va[i] - vb[i]);
    d = std::isnan(e) ? INFINITY : std::max(d, e);
    s = std::max(s, std::fabs(vb[i]));
  }
  return va.size() == vb.size() ? d / s : INFINITY;
}

struct Run {
  Tensor y;
  std::vector<Tensor> grads;  // z, w, b, w2, b2, r
};

// Inputs: index 0 z, 1 w, 2 b, 3 w2, 4 b2, 5 r; upstream gradient dy. fused or unfused composition.
Run run(const std::vector<Tensor>& base, const Tensor& dy, int64_t h, Act act, bool fused) {
  std::vector<Tensor> in;
  for (const Tensor& t : base) in.push_back(t.detach().contiguous().requires_grad_());
  Tensor y = fused ? gated_dwconv_linear_residual(in[0], in[1], in[2], h, act, in[3], in[4], in[5])
                   : linear_residual(gated_dwconv(in[0], in[1], in[2], h, act), in[3], in[4], in[5]);
  y.backward(dy);
  Run r{y, {}};
  for (const Tensor& t : in) r.grads.push_back(t.grad());
  return r;
}

void check(int64_t B, int64_t H, int64_t W, int64_t h, int64_t cc, int64_t n, Act act, DType dt, uint32_t seed) {
  const char* names[] = {"dz", "dw", "db", "dw2", "db2", "dr"};
  const Shape shapes[] = {{B, H, W, 2 * h}, {cc, 1, 7, 7}, {cc}, {n, h}, {n}, {B, H, W, n}};
  const double stds[] = {1.0, 0.2, 1.0, 0.2, 1.0, 1.0};
  std::vector<Tensor> gpu, ref;
  for (int i = 0; i < 6; ++i) {
    Tensor t = host_randn(shapes[i], seed + i, stds[i]).to(dt).to(Device::cuda(0));
    gpu.push_back(t);
    ref.push_back(t.to(Device::cpu()).to(DType::f64));
  }
  Tensor dyg = host_randn({B, H, W, n}, seed + 9, 1.0).to(dt).to(Device::cuda(0));
  Tensor dyr = dyg.to(Device::cpu()).to(DType::f64);
  const std::string t = std::string(dtype_name(dt)) + " " + shape_str({B, H, W, 2 * h}) + " cc " + std::to_string(cc);
  Run f = run(gpu, dyg, h, act, true), u = run(gpu, dyg, h, act, false), f2 = run(gpu, dyg, h, act, true);
  Run r = run(ref, dyr, h, act, true);
  const double tol = dt == DType::bf16 ? 2e-2 : 1e-4;
  EXPECT_TRUE(same_bits(f.y, u.y)) << t << " y: fused and unfused differ";
  EXPECT_TRUE(same_bits(f.y, f2.y)) << t << " y: two runs differ";
  EXPECT_LE(rel_err(f.y, r.y), tol) << t << " y against the CPU";
  for (int i = 0; i < 6; ++i) {
    EXPECT_TRUE(same_bits(f.grads[i], u.grads[i])) << t << " " << names[i] << ": fused and unfused differ";
    EXPECT_TRUE(same_bits(f.grads[i], f2.grads[i])) << t << " " << names[i] << ": two runs differ";
    EXPECT_LE(rel_err(f.grads[i], r.grads[i]), tol) << t << " " << names[i] << " against the CPU";
  }
}

}  // namespace

TEST(CudaFused, CudaGatedDwconvLinear) {
  if (!mo::cuda_available()) GTEST_SKIP();
  for (DType dt : {DType::bf16, DType::f32}) {
    check(2, 9, 11, 256, 96, 96, Act::gelu, dt, 10);  // tiny's stage-1 widths: the 16-byte paths
    check(1, 7, 7, 13, 5, 7, Act::silu, dt, 20);      // odd widths: 1-element items
    check(2, 15, 9, 64, 64, 40, Act::gelu, dt, 30);   // cc = h: no identity channels
    check(1, 29, 22, 344, 128, 128, Act::gelu, dt, 40);  // padded base stage 1, several tiles
  }
}
