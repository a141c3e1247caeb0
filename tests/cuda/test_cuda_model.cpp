// test_cuda_model.cpp: the whole model on the GPU against the CPU: fp32 logits and every parameter
// gradient within 1e-4 relative, bf16 loss within 1e-2, and determinism (the same seed gives
// bit-identical losses over 20 training steps); mambaout_base's padded widths against the CPU and the
// unpadded model, with bf16 AdamW steps keeping the pads 0. Skipped where there is no GPU.
#include "autograd/cuda_allocator.h"
#include "nn/adamw.h"
#include "nn/mambaout.h"
#include "ops/loss/cross_entropy.h"
#include "tests/test_util.h"

using namespace mo;
using namespace mo::nn;

namespace {

struct Result {
  Tensor logits, loss;
  std::vector<std::pair<std::string, Tensor>> grads;
};

Result forward_backward(const MambaOutConfig& cfg, Device dev, DType dt, const Tensor& x, const Tensor& target) {
  MambaOut m(cfg, 21);
  AdamW opt(m, dev, dt);  // packs parameters on the device, gradients into the fp32 arena
  opt.zero_grad();
  Result r;
  r.logits = m.forward(x.to(dev));
  r.loss = soft_target_cross_entropy(r.logits, target.to(dev));
  r.loss.backward();
  for (auto& [n, p] : m.named_parameters()) r.grads.emplace_back(n, p.grad().cpu().to(DType::f32));
  r.logits = r.logits.cpu().to(DType::f32);
  r.loss = r.loss.cpu().to(DType::f32);
  return r;
}

}  // namespace

TEST(CudaModel, Fp32LogitsAndGradientsMatchCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no GPU";
  auto cfg = mambaout_config("mambaout_femto");
  Tensor x = mo::test::randn({4, 3, 64, 64}, 3);
  Tensor t = mo::test::rand_uniform({4, 1000}, 4, 0.0, 1.0);
  Result cpu = forward_backward(cfg, Device::cpu(), DType::f32, x, t);
  Result gpu = forward_backward(cfg, Device::cuda(0), DType::f32, x, t);
  EXPECT_TRUE(mo::test::all_close(gpu.logits, cpu.logits, 1e-4, "logits"));
  EXPECT_TRUE(mo::test::all_close(gpu.loss, cpu.loss, 1e-4, "loss"));
  for (size_t i = 0; i < cpu.grads.size(); ++i)
    EXPECT_TRUE(mo::test::all_close(gpu.grads[i].second, cpu.grads[i].second, 1e-4, cpu.grads[i].first));
}

TEST(CudaModel, Bf16LossWithinOnePercent) {
  if (!cuda_available()) GTEST_SKIP() << "no GPU";
  auto cfg = mambaout_config("mambaout_femto");
  Tensor x = mo::test::randn({8, 3, 64, 64}, 5);
  Tensor t = smooth_one_hot(Tensor::from_vector<int64_t>({1, 5, 9, 100, 300, 999, 0, 42}, {8}), 1000, 0.1);
  Result f32 = forward_backward(cfg, Device::cuda(0), DType::f32, x, t);
  Result b16 = forward_backward(cfg, Device::cuda(0), DType::bf16, x, t);
  EXPECT_TRUE(mo::test::all_close(b16.loss, f32.loss, 1e-2, "bf16 loss"));
}

TEST(CudaModel, TwentyStepsAreBitIdentical) {
  if (!cuda_available()) GTEST_SKIP() << "no GPU";
  auto cfg = mambaout_config("mambaout_femto");
  cfg.drop_path_rate = 0.1;
  cfg.num_classes = 10;
  Tensor x = mo::test::randn({16, 3, 64, 64}, 7).to(Device::cuda(0));
  Tensor t = smooth_one_hot(Tensor::from_vector<int64_t>({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 5}, {16}), 10, 0.1,
                            DType::f32, Device::cuda(0));
  auto run = [&]() {
    MambaOut m(cfg, 9);
    AdamW opt(m, Device::cuda(0), DType::bf16);
    std::vector<float> losses;
    for (int s = 0; s < 20; ++s) {
      m.set_drop_path_key(42, s);
      opt.zero_grad();
      Tensor loss = soft_target_cross_entropy(m.forward(x), t);
      loss.backward();
      opt.step(1e-3);
      losses.push_back(static_cast<float>(loss.item()));
    }
    return losses;
  };
  auto a = run(), b = run();
  EXPECT_EQ(a, b);
  EXPECT_LT(a.back(), a.front());  // it learns
}

TEST(CudaModel, PaddedBaseWidthsMatchCpuAndKeepPadsZero) {
  // mambaout_base's widths, one block per stage: h = 341, 682, 1365 run as 344, 688, 1368 (nn/mambaout.h),
  // which puts cuBLASLt and the gate kernels on their aligned paths. fp32: the padded model on the GPU
  // equals the CPU and the unpadded model on the GPU; bf16 AdamW steps keep every pad exactly 0.
  if (!cuda_available()) GTEST_SKIP() << "no GPU";
  auto cfg = mambaout_config("mambaout_base");
  cfg.depths = {1, 1, 1, 1};
  cfg.num_classes = 10;
  auto plain = cfg;
  plain.hidden_multiple = 1;
  Tensor x = mo::test::randn({2, 3, 64, 64}, 11);
  Tensor t = mo::test::rand_uniform({2, 10}, 12, 0.0, 1.0);
  Result cpu = forward_backward(cfg, Device::cpu(), DType::f32, x, t);
  Result gpu = forward_backward(cfg, Device::cuda(0), DType::f32, x, t);
  Result ref = forward_backward(plain, Device::cuda(0), DType::f32, x, t);
  EXPECT_TRUE(mo::test::all_close(gpu.logits, cpu.logits, 1e-4, "logits"));
  EXPECT_TRUE(mo::test::all_close(gpu.logits, ref.logits, 1e-4, "logits (unpadded)"));
  MambaOut layout(cfg, 0, false);
  for (size_t i = 0; i < cpu.grads.size(); ++i) {
    const std::string& n = cpu.grads[i].first;
    EXPECT_TRUE(mo::test::all_close(gpu.grads[i].second, cpu.grads[i].second, 1e-4, n));
    EXPECT_TRUE(mo::test::all_close(layout.to_reference(n, gpu.grads[i].second), ref.grads[i].second, 1e-4, n));
  }

  MambaOut m(cfg, 5);
  AdamW opt(m, Device::cuda(0), DType::bf16);
  Tensor xg = x.to(Device::cuda(0)), tg = t.to(Device::cuda(0));
  for (int s = 0; s < 3; ++s) {
    opt.zero_grad();
    soft_target_cross_entropy(m.forward(xg), tg).backward();
    opt.step(1e-2);
  }
  int padded = 0;
  for (const auto& slot : opt.slots()) {
    if (!m.padding_of(slot.name)) continue;
    ++padded;
    // stored -> reference -> stored zeroes the pads: equal bits mean they were 0 already
    for (const Tensor& flat : {opt.master(), opt.exp_avg(), opt.exp_avg_sq(), opt.grads()}) {
      Tensor v = flat.as_strided(slot.shape, contiguous_strides(slot.shape), flat.offset() + slot.offset).cpu();
      EXPECT_EQ(m.from_reference(slot.name, m.to_reference(slot.name, v)).to_vector<float>(), v.to_vector<float>())
          << slot.name;
    }
    Tensor w = m.parameter(slot.name).cpu().to(DType::f32);  // the bf16 compute copy
    EXPECT_EQ(m.from_reference(slot.name, m.to_reference(slot.name, w)).to_vector<float>(), w.to_vector<float>())
        << slot.name;
  }
  EXPECT_EQ(padded, 9);  // fc1.weight, fc1.bias, fc2.weight of stages 1-3
}
