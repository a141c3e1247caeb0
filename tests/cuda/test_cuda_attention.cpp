// test_cuda_attention.cpp: the CUDA attention beside its op-table cases (tests/ops/op_table.cpp, run by
// tests/cuda/test_cuda_ops.cpp: odd lengths, full and causal, f32 and bf16 against the CPU, bit-identical
// repeats): a sharp softmax whose running max moves across key tiles, head dims other than 64 refused by
// name, and a whole small ViT (full and causal, logits and every parameter gradient) against the CPU.
// Every test skips where there is no GPU.
#include "autograd/cuda_allocator.h"
#include "nn/module.h"
#include "nn/vit.h"
#include "ops/attention/attention.h"
#include "ops/loss/cross_entropy.h"
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

}  // namespace

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

TEST(CudaAttention, HeadDimOtherThan64IsRefused) {
  if (!mo::cuda_available()) GTEST_SKIP();
  Tensor qkv = Tensor::zeros({2, 5, 3 * 2 * 32}, DType::f32, Device::cuda(0));
  EXPECT_NE(mo::test::error_of([&] { attention(qkv, 2, false); }).find("head dim 64, got 32"), std::string::npos);
  Tensor f64 = Tensor::zeros({2, 5, 3 * 64}, DType::f64, Device::cuda(0));
  EXPECT_NE(mo::test::error_of([&] { attention(f64, 1, false); }).find("float32 or bfloat16"), std::string::npos);
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
