// test_cuda_conv_wgrad.cpp: the dense convolution's weight and bias gradients on CUDA where they take
// the many-rows path (ops/conv/conv2d_gemm.cu, wgrad_rows: small Co × K output, ≥ 256 rows per output,
// as the stem's first convolution; Co % 8 == 0 takes wgrad_rows_vec), against the CPU float64 op on the same rounded values, and
// bit-identical across two runs. Odd Co (a partial 4-wide tile) and mambaout_tiny's stem width. Skips
// without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "autograd/cuda_allocator.h"
#include "autograd/tensor.h"
#include "ops/conv/conv2d.h"

using namespace mo;

namespace {

Tensor host_randn(const Shape& s, uint32_t seed, double std) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> dist(0.0, std);
  std::vector<double> v(shape_numel(s));
  for (auto& x : v) x = dist(gen);
  return Tensor::from_vector(v, s);
}

double rel_err(const Tensor& a, const Tensor& b) {  // max |a − b| / max |b|; NaN -> inf
  auto va = a.to_vector<double>(), vb = b.to_vector<double>();
  double d = 0, s = 1e-12;
  for (size_t i = 0; i < va.size(); ++i) {
    const double e = std::fabs(va[i] - vb[i]);
    d = std::isnan(e) ? INFINITY : std::max(d, e);
    s = std::max(s, std::fabs(vb[i]));
  }
  return va.size() == vb.size() ? d / s : INFINITY;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  auto va = a.to_vector<float>(), vb = b.to_vector<float>();
  return va.size() == vb.size() && std::memcmp(va.data(), vb.data(), va.size() * sizeof(float)) == 0;
}

// dw, db of conv2d(x, w, b, 2, 1) under upstream gradient dy; x needs no gradient (an image)
std::pair<Tensor, Tensor> grads(const Tensor& x, const Tensor& w0, const Tensor& b0, const Tensor& dy) {
  Tensor w = w0.detach().requires_grad_(), b = b0.detach().requires_grad_();
  conv2d(x, w, b, 2, 1).backward(dy);
  return {w.grad(), b.grad()};
}

void check(int64_t B, int64_t H, int64_t Co, DType dt, uint32_t seed) {
  const int64_t Ho = (H + 2 - 3) / 2 + 1;
  Tensor x = host_randn({B, H, H, 3}, seed, 1.0).to(dt).to(Device::cuda(0));
  Tensor w = host_randn({Co, 3, 3, 3}, seed + 1, 0.3).to(dt).to(Device::cuda(0));
  Tensor b = host_randn({Co}, seed + 2, 1.0).to(dt).to(Device::cuda(0));
  Tensor dy = host_randn({B, Ho, Ho, Co}, seed + 3, 1.0).to(dt).to(Device::cuda(0));
  auto [dw, db] = grads(x, w, b, dy);
  auto [dw2, db2] = grads(x, w, b, dy);
  auto f64 = [](const Tensor& t) { return t.to(Device::cpu()).to(DType::f64); };
  auto [dwr, dbr] = grads(f64(x), f64(w), f64(b), f64(dy));
  const double tol = dt == DType::bf16 ? 2e-2 : 1e-4;
  const std::string t = std::string(dtype_name(dt)) + " x " + shape_str({B, H, H, 3}) + " Co " + std::to_string(Co);
  EXPECT_LE(rel_err(dw, dwr), tol) << t << " dw";
  EXPECT_LE(rel_err(db, dbr), tol) << t << " db";
  EXPECT_TRUE(same_bits(dw, dw2)) << t << " dw: two runs differ";
  EXPECT_TRUE(same_bits(db, db2)) << t << " db: two runs differ";
}

}  // namespace

TEST(CudaConv, CudaStemWeightGradientManyRows) {
  if (!mo::cuda_available()) GTEST_SKIP();
  for (DType dt : {DType::bf16, DType::f32}) {
    check(2, 464, 13, dt, 1);  // 107,648 rows ≥ 256 · 13 · 32: the many-rows path, a partial co tile
    check(8, 448, 48, dt, 5);  // mambaout_tiny's stem conv1 width (401,408 rows): 16-byte chunk copies
    check(4, 448, 24, dt, 7);  // mambaout_femto's (200,704 rows)
    check(1, 31, 24, dt, 9);   // few rows: the cuBLASLt path, same checks
  }
}
