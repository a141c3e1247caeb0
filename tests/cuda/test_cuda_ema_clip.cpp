// test_cuda_ema_clip.cpp: the CUDA model-EMA update, gradient-norm clipping and AdamW with a device clip
// coefficient against their CPU twins (ops/optim/ema.h, grad_norm.h, adamw.h). The EMA and AdamW do the
// same fp32 operations in the same order: equal bit for bit; the norm sums in another order (fp32 per
// block, fp64 across blocks): equal to 1e-6. Sizes with a tail that is not a multiple of 4, and an
// unaligned view (offset 1), exercise the vector and the element-wise paths.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "autograd/cuda_allocator.h"
#include "autograd/tensor.h"
#include "ops/optim/adamw.h"
#include "ops/optim/ema.h"
#include "ops/optim/grad_norm.h"

using namespace mo;

namespace {

Tensor randn(int64_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = dist(gen);
  return Tensor::from_vector(v, {n});
}

bool same_bits(const Tensor& a, const Tensor& b) {
  std::vector<float> x = a.to(Device::cpu()).contiguous().to_vector<float>(), y = b.to(Device::cpu()).contiguous().to_vector<float>();
  return x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0;
}

}  // namespace

TEST(CudaEmaClip, CudaEmaUpdateMatchesCpu) {
  if (!mo::cuda_available()) GTEST_SKIP();
  for (int64_t n : {1, 7, 70001, 1 << 20}) {
    Tensor p = randn(n, 1), e = randn(n, 2);
    Tensor eg = e.to(Device::cuda(0)), pg = p.to(Device::cuda(0));
    for (double d : {0.0, 0.3, 0.9998, 1.0}) {
      ema_update(e, p, d);
      ema_update(eg, pg, d);
      EXPECT_TRUE(same_bits(eg, e)) << n << " decay " << d;
    }
  }
  // An unaligned view: the element-wise path.
  Tensor p = randn(1001, 3), e = randn(1001, 4);
  Tensor pg = p.to(Device::cuda(0)), eg = e.to(Device::cuda(0));
  Tensor pv = pg.as_strided({1000}, {1}, 1), ev = eg.as_strided({1000}, {1}, 1);
  ema_update(ev, pv, 0.7);
  ema_update(e.as_strided({1000}, {1}, 1), p.as_strided({1000}, {1}, 1), 0.7);
  EXPECT_TRUE(same_bits(eg, e));
}

TEST(CudaEmaClip, CudaClipGradNormMatchesCpu) {
  if (!mo::cuda_available()) GTEST_SKIP();
  for (int64_t n : {1, 5, 1023, 70001, 26500003}) {
    Tensor g = randn(n, 5);
    for (double max_norm : {1e-3, 1e30}) {
      std::vector<float> c = clip_grad_norm(g, 0.25, max_norm).to_vector<float>();
      std::vector<float> d = clip_grad_norm(g.to(Device::cuda(0)), 0.25, max_norm).to(Device::cpu()).to_vector<float>();
      EXPECT_NEAR(d[0], c[0], 1e-6 * c[0]) << n;
      EXPECT_NEAR(d[1], c[1], 1e-6 * c[1]) << n;
      if (max_norm > 1) EXPECT_EQ(d[1], 1.0f);
    }
  }
  // Deterministic: the same bits twice.
  Tensor g = randn(3000017, 6).to(Device::cuda(0));
  EXPECT_TRUE(same_bits(clip_grad_norm(g, 1.0, 1.0), clip_grad_norm(g, 1.0, 1.0)));
}

TEST(CudaEmaClip, CudaAdamWWithClipCoefficientMatchesCpu) {
  if (!mo::cuda_available()) GTEST_SKIP();
  const int64_t n = 74113;
  Tensor p = randn(n, 7), g = randn(n, 8);
  std::vector<AdamWSegment> segs = {{0, 50000, true}, {50000, n - 50000, false}};
  Tensor pc = p.clone(), mc = Tensor::zeros({n}), vc = Tensor::zeros({n});
  Tensor pg = p.to(Device::cuda(0)), mg = Tensor::zeros({n}, DType::f32, Device::cuda(0)), vg = mg.clone();
  Tensor coef_c = Tensor::from_vector(std::vector<float>{3.0f, 0.37f}, {2}), coef_g = coef_c.to(Device::cuda(0));
  for (int64_t step = 1; step <= 3; ++step) {
    AdamWHyper hp;
    hp.lr = 1e-3;
    hp.step = step;
    hp.grad_scale = 0.5;
    adamw_step(pc, g, mc, vc, segs, hp, Tensor(), coef_c, 1);
    adamw_step(pg, g.to(Device::cuda(0)), mg, vg, segs, hp, Tensor(), coef_g, 1);
  }
  EXPECT_TRUE(same_bits(pg, pc));
  EXPECT_TRUE(same_bits(mg, mc));
  EXPECT_TRUE(same_bits(vg, vc));
}
