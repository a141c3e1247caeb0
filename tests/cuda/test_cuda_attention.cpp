// test_cuda_attention.cpp: the fused CUDA attention (ops/attention/attention.cu) against the CPU op on
// fresh random data: output and dqkv, full and causal, lengths that are not multiples of the tiles (1, 17,
// 65, 197) and several heads, in float32 (1e-4, max-abs scaled) and bfloat16 (2e-2 against the CPU run on
// the bf16-rounded inputs); the backward bit-identical from run to run; head dims other than 64 refused
// by name; the ViT token ops (ops/shape/tokens.cu) and a whole small ViT (full and causal, forward and every
// parameter gradient) against the CPU. Every test skips where there is no GPU.
#include <cstring>
#include <tuple>

#include "autograd/cuda_allocator.h"
#include "nn/module.h"
#include "nn/vit.h"
#include "ops/attention/attention.h"
#include "ops/loss/cross_entropy.h"
#include "ops/shape/tokens.h"
#include "tests/test_util.h"

using namespace mo;
using mo::test::randn;

namespace {

Tensor round_to(const Tensor& t, DType dt) { return dt == DType::f32 ? t : t.to(dt).to(DType::f32); }

struct Result {
  Tensor out, dqkv;
};

// The op on `dev` in dtype dt (CPU: float32 on the dt-rounded values), backward with upstream dout.
Result run(const Tensor& qkv32, const Tensor& dout32, int64_t heads, bool causal, Device dev, DType dt) {
  Tensor qkv = dev.is_cpu() ? round_to(qkv32, dt).clone() : qkv32.to(dt).to(dev);
  Tensor dout = dev.is_cpu() ? round_to(dout32, dt) : dout32.to(dt).to(dev);
  qkv.requires_grad_();
  Tensor out = attention(qkv, heads, causal);
  out.backward(dout);
  return {out, qkv.grad()};
}

bool same_bits(const Tensor& a, const Tensor& b) {
  auto va = a.to_vector<float>(), vb = b.to_vector<float>();
  return va.size() == vb.size() && std::memcmp(va.data(), vb.data(), va.size() * sizeof(float)) == 0;
}

}  // namespace

TEST(CudaAttention, MatchesCpuOddLengthsFullAndCausal) {
  if (!mo::cuda_available()) GTEST_SKIP();
  for (bool causal : {false, true})
    for (auto [B, L, H] : {std::tuple{2, 17, 3}, std::tuple{2, 65, 3}, std::tuple{1, 197, 6}, std::tuple{3, 1, 2},
                           std::tuple{1, 130, 1}})
      for (DType dt : {DType::f32, DType::bf16}) {
        SCOPED_TRACE(testing::Message() << "causal " << causal << " B " << B << " L " << L << " H " << H << " "
                                        << dtype_name(dt));
        const double tol = dt == DType::f32 ? 1e-4 : 2e-2;
        Tensor qkv = randn({B, L, 3 * H * 64}, 21 + L + causal, DType::f32);
        Tensor dout = randn({B, L, H * 64}, 22 + L, DType::f32);
        Result cpu = run(qkv, dout, H, causal, Device::cpu(), dt);
        Result gpu = run(qkv, dout, H, causal, Device::cuda(0), dt);
        EXPECT_EQ(gpu.out.dtype(), dt);
        EXPECT_TRUE(mo::test::all_close(gpu.out, cpu.out, tol, "out"));
        EXPECT_TRUE(mo::test::all_close(gpu.dqkv, cpu.dqkv, tol, "dqkv"));
      }
}

TEST(CudaAttention, SharpSoftmaxMatchesCpu) {
  // scores of a few hundred (q, k scaled up): the running max must be rescaled correctly across key tiles
  if (!mo::cuda_available()) GTEST_SKIP();
  for (bool causal : {false, true}) {
    Tensor qkv = randn({2, 97, 3 * 2 * 64}, 31, DType::f32, 4.0);
    Tensor dout = randn({2, 97, 2 * 64}, 32, DType::f32);
    Result cpu = run(qkv, dout, 2, causal, Device::cpu(), DType::f32);
    Result gpu = run(qkv, dout, 2, causal, Device::cuda(0), DType::f32);
    EXPECT_TRUE(mo::test::all_close(gpu.out, cpu.out, 1e-4, "out"));
    EXPECT_TRUE(mo::test::all_close(gpu.dqkv, cpu.dqkv, 1e-3, "dqkv"));
  }
}

TEST(CudaAttention, BackwardIsBitIdenticalAcrossRuns) {
  if (!mo::cuda_available()) GTEST_SKIP();
  for (DType dt : {DType::f32, DType::bf16}) {
    Tensor qkv = randn({4, 197, 3 * 3 * 64}, 41, DType::f32), dout = randn({4, 197, 3 * 64}, 42, DType::f32);
    Result a = run(qkv, dout, 3, false, Device::cuda(0), dt), b = run(qkv, dout, 3, false, Device::cuda(0), dt);
    EXPECT_TRUE(same_bits(a.out, b.out)) << dtype_name(dt);
    EXPECT_TRUE(same_bits(a.dqkv, b.dqkv)) << dtype_name(dt);
  }
}

TEST(CudaAttention, HeadDimOtherThan64IsRefused) {
  if (!mo::cuda_available()) GTEST_SKIP();
  Tensor qkv = Tensor::zeros({2, 5, 3 * 2 * 32}, DType::f32, Device::cuda(0));
  EXPECT_NE(mo::test::error_of([&] { attention(qkv, 2, false); }).find("head dim 64, got 32"), std::string::npos);
  Tensor f64 = Tensor::zeros({2, 5, 3 * 64}, DType::f64, Device::cuda(0));
  EXPECT_NE(mo::test::error_of([&] { attention(f64, 1, false); }).find("float32 or bfloat16"), std::string::npos);
}

TEST(CudaAttention, TokenOpsMatchCpu) {
  if (!mo::cuda_available()) GTEST_SKIP();
  for (bool last : {false, true})
    for (DType dt : {DType::f32, DType::bf16}) {
      Tensor x = randn({3, 16, 40}, 51, DType::f32), cls = randn({1, 1, 40}, 52, DType::f32);
      Tensor pos = randn({1, 17, 40}, 53, DType::f32), dy = randn({3, 40}, 54, DType::f32);
      std::vector<Tensor> grads[2], outs;
      for (int on_gpu = 0; on_gpu < 2; ++on_gpu) {
        auto put = [&](const Tensor& t) {
          return (on_gpu ? t.to(dt).to(Device::cuda(0)) : round_to(t, dt).clone()).requires_grad_();
        };
        Tensor a = put(x), b = put(cls), c = put(pos);
        Tensor y = select_token(class_token_embed(a, b, c, last), last ? 16 : 3);
        y.backward(on_gpu ? dy.to(dt).to(Device::cuda(0)) : round_to(dy, dt));
        outs.push_back(y);
        grads[on_gpu] = {a.grad(), b.grad(), c.grad()};
      }
      const double tol = dt == DType::f32 ? 1e-6 : 1e-2;
      EXPECT_TRUE(mo::test::all_close(outs[1], outs[0], tol, "tokens"));
      for (int k = 0; k < 3; ++k) EXPECT_TRUE(mo::test::all_close(grads[1][k], grads[0][k], tol, "grad " + std::to_string(k)));
    }
}

TEST(CudaAttention, WholeVitMatchesCpu) {
  if (!mo::cuda_available()) GTEST_SKIP();
  for (bool causal : {false, true}) {
    SCOPED_TRACE(causal ? "causal" : "full");
    nn::VitConfig c = nn::vit_config("vit_tiny_patch4_32");
    c.embed_dim = 128, c.num_heads = 2, c.depth = 2, c.num_classes = 10, c.causal = causal;  // head dim 64
    nn::VisionTransformer cpu(c, 5), gpu(c, 5);
    nn::pack_parameters(gpu, Device::cuda(0), DType::f32);
    Tensor x = randn({4, 3, 32, 32}, 61, DType::f32), target = mo::test::rand_uniform({4, 10}, 62, 0.0, 1.0);
    Tensor lc = cpu.forward(x), lg = gpu.forward(x.to(Device::cuda(0)));
    soft_target_cross_entropy(lc, target).backward();
    soft_target_cross_entropy(lg, target.to(Device::cuda(0))).backward();
    EXPECT_TRUE(mo::test::all_close(lg, lc, 1e-4, "logits"));
    for (auto& [n, p] : cpu.named_parameters())
      EXPECT_TRUE(mo::test::all_close(gpu.parameter(n).grad(), p.grad(), 1e-3, n));
  }
}
