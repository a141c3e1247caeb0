// test_cuda_attention.cpp: the fused CUDA attention (ops/attention/attention.cu) against the CPU op on
// fresh random data: output and dqkv, full and causal, lengths that are not multiples of the tiles (1, 17,
// 65, 197) and several heads, in float32 (1e-4, max-abs scaled) and bfloat16 (2e-2 against the CPU run on
// the bf16-rounded inputs); the backward bit-identical from run to run; head dims other than 64 refused
// by name. Every test skips where there is no GPU.
#include <cstring>
#include <tuple>

#include "autograd/cuda_allocator.h"
#include "ops/attention/attention.h"
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
