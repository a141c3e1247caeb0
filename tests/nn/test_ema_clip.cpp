// test_ema_clip.cpp: the model EMA update and gradient clipping by global norm on the CPU (the CUDA
// twins are compared in tests/cuda/test_cuda_ema_clip.cpp):
//  - the decay schedule is timm's ModelEmaV3.get_decay (values from its formula for known steps);
//  - decay 0 copies the weights bit for bit, decay 1 keeps the EMA, and other decays are torch.lerp;
//  - the norm is sqrt(Σ g²)·scale, the coefficient min(1, max / (norm + 1e-6));
//  - AdamW with a clip coefficient is AdamW on gradients scaled by it, bit for bit; coefficient 1 changes
//    nothing;
//  - padded hidden widths (nn/module.h Padding) leave the norm unchanged: the padded model's gradient
//    norm is the unpadded model's.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <span>

#include "nn/adamw.h"
#include "nn/mambaout.h"
#include "ops/loss/cross_entropy.h"
#include "ops/optim/adamw.h"
#include "ops/optim/ema.h"
#include "ops/optim/grad_norm.h"
#include "tests/test_util.h"

using namespace mo;

TEST(ModelEma, DecayScheduleIsTimmModelEmaV3) {
  // Without warm-up: 0 at the first update (the EMA starts as a copy), then the decay.
  EXPECT_EQ(ema_decay_for_step(0.9998, false, 1), 0.0);
  EXPECT_EQ(ema_decay_for_step(0.9998, false, 2), 0.9998);
  EXPECT_EQ(ema_decay_for_step(0.9998, false, 100000), 0.9998);
  // With warm-up: 1 − (1 + (step − 1))^(−2/3), capped at the decay; timm: 1 − 2^(−2/3) at step 2,
  // 0.990026... at step 1001 (1 − 1001^(−2/3)).
  EXPECT_EQ(ema_decay_for_step(0.9998, true, 1), 0.0);
  EXPECT_NEAR(ema_decay_for_step(0.9998, true, 2), 0.37003947505256, 1e-12);
  EXPECT_NEAR(ema_decay_for_step(0.9998, true, 1001), 0.99000666, 1e-6);
  EXPECT_EQ(ema_decay_for_step(0.99, true, 1000000), 0.99);
}

TEST(ModelEma, UpdateIsLerpAndDecayZeroCopies) {
  Tensor p = mo::test::randn({70001}, 1), e0 = mo::test::randn({70001}, 2);
  Tensor e = e0.clone();
  ema_update(e, p, 0.0);
  EXPECT_EQ(std::memcmp(e.raw_data(), p.raw_data(), p.nbytes()), 0);  // bit for bit
  e = e0.clone();
  ema_update(e, p, 1.0);
  EXPECT_EQ(std::memcmp(e.raw_data(), e0.raw_data(), p.nbytes()), 0);
  for (double d : {0.9, 0.3}) {
    e = e0.clone();
    ema_update(e, p, d);
    std::vector<float> got = e.to_vector<float>(), a = e0.to_vector<float>(), b = p.to_vector<float>();
    for (size_t i = 0; i < got.size(); i += 997)
      EXPECT_NEAR(got[i], d * a[i] + (1 - d) * b[i], 1e-6) << i;
  }
  EXPECT_THROW(ema_update(e, p.to(DType::f64), 0.5), Error);
  EXPECT_THROW(ema_update(e, p, 1.5), Error);
  EXPECT_THROW(ema_update(e, Tensor::zeros({5}), 0.5), Error);
}

TEST(ClipGrad, NormAndCoefficient) {
  Tensor g = mo::test::randn({100003}, 3);
  std::vector<float> v = g.to_vector<float>();
  double sq = 0;
  for (float x : v) sq += static_cast<double>(x) * x;
  const double norm = 0.25 * std::sqrt(sq);
  std::vector<float> r = clip_grad_norm(g, 0.25, 1.0).to_vector<float>();
  EXPECT_NEAR(r[0], norm, 1e-5 * norm);
  EXPECT_NEAR(r[1], 1.0 / (norm + 1e-6), 1e-6);
  r = clip_grad_norm(g, 0.25, 10 * norm).to_vector<float>();
  EXPECT_EQ(r[1], 1.0f);  // below the threshold: exactly 1
  EXPECT_EQ(clip_grad_norm(Tensor::zeros({10}), 1.0, 1.0).to_vector<float>()[0], 0.0f);
  EXPECT_THROW(clip_grad_norm(g, 1.0, 0.0), Error);
  EXPECT_THROW(clip_grad_norm(g, 1.0, std::nan("")), Error);
  EXPECT_THROW(clip_grad_norm(g.to(DType::f64), 1.0, 1.0), Error);
}

TEST(ClipGrad, AdamWCoefficientScalesTheGradients) {
  const int64_t n = 5003;
  Tensor p0 = mo::test::randn({n}, 4), g = mo::test::randn({n}, 5);
  std::vector<AdamWSegment> segs = {{0, 3000, true}, {3000, n - 3000, false}};
  AdamWHyper hp;
  hp.lr = 1e-2;
  hp.grad_scale = 0.5;
  Tensor coef = Tensor::from_vector(std::vector<float>{7.0f, 0.3f}, {2});
  // Reference: the gradients multiplied by grad_scale and then by the coefficient beforehand.
  Tensor g_pre = Tensor::from_vector(g.to_vector<float>(), {n});
  for (float& x : std::span<float>(g_pre.data<float>(), static_cast<size_t>(n))) x = (x * 0.5f) * 0.3f;
  Tensor pa = p0.clone(), ma = Tensor::zeros({n}), va = Tensor::zeros({n});
  Tensor pb = p0.clone(), mb = Tensor::zeros({n}), vb = Tensor::zeros({n});
  for (int64_t step = 1; step <= 3; ++step) {
    hp.step = step;
    adamw_step(pa, g, ma, va, segs, hp, Tensor(), coef, 1);
    AdamWHyper h1 = hp;
    h1.grad_scale = 1.0;
    adamw_step(pb, g_pre, mb, vb, segs, h1);
  }
  EXPECT_EQ(pa.to_vector<float>(), pb.to_vector<float>());
  EXPECT_EQ(va.to_vector<float>(), vb.to_vector<float>());
  // A coefficient of 1 is no clipping, bit for bit.
  Tensor one = Tensor::from_vector(std::vector<float>{1.0f}, {1});
  Tensor pc = p0.clone(), mc = Tensor::zeros({n}), vc = Tensor::zeros({n});
  Tensor pd = p0.clone(), md = Tensor::zeros({n}), vd = Tensor::zeros({n});
  hp.step = 1;
  adamw_step(pc, g, mc, vc, segs, hp, Tensor(), one, 0);
  adamw_step(pd, g, md, vd, segs, hp);
  EXPECT_EQ(pc.to_vector<float>(), pd.to_vector<float>());
  EXPECT_THROW(adamw_step(pc, g, mc, vc, segs, hp, Tensor(), one, 1), Error);  // no element 1
}

TEST(ClipGrad, PaddedWidthsLeaveTheNormUnchanged) {
  // Hidden widths 42, 106, 149, 170 stored padded to multiples of 8 (as mambaout_base's are).
  nn::MambaOutConfig c = nn::mambaout_config("mambaout_femto");
  c.name = "clip_pad_test";
  c.depths = {1, 1, 2, 1};
  c.dims = {16, 40, 56, 64};
  c.num_classes = 10;
  nn::MambaOutConfig u = c;
  u.hidden_multiple = 1;
  nn::MambaOut pad(c, 21), ref(u, 21);
  nn::AdamW opt_pad(pad, Device::cpu(), DType::f32), opt_ref(ref, Device::cpu(), DType::f32);
  ASSERT_GT(opt_pad.master().numel(), opt_ref.master().numel());  // there are pads
  Tensor x = mo::test::randn({2, 3, 32, 32}, 3), target = mo::test::rand_uniform({2, 10}, 4, 0.0, 1.0);
  soft_target_cross_entropy(pad.forward(x), target).backward();
  soft_target_cross_entropy(ref.forward(x), target).backward();
  const float a = clip_grad_norm(opt_pad.grads(), 1.0, 1.0).to_vector<float>()[0];
  const float b = clip_grad_norm(opt_ref.grads(), 1.0, 1.0).to_vector<float>()[0];
  EXPECT_GT(b, 0.0f);
  EXPECT_NEAR(a, b, 1e-5 * b);
  // The pads' share is exactly zero: the norm over the reference layout is the same sum.
  double sq = 0;
  for (const auto& s : opt_pad.slots())
    for (float v : opt_pad.export_slot(opt_pad.grads(), s).contiguous().to_vector<float>()) sq += double(v) * v;
  EXPECT_NEAR(a, std::sqrt(sq), 1e-6 * a);
}
