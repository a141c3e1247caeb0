// test_cuda_attention.cpp: the CUDA attention beside its op-table cases (tests/ops/op_table.cpp, run by
// tests/cuda/test_cuda_ops.cpp: odd lengths, full and causal, f32 and bf16 against the CPU, bit-identical
// repeats): a sharp softmax whose running max moves across key tiles (f32 and bf16), the entry points on
// tensors off 16-byte alignment (bf16 copies in and out), head dims other than 64 and misshapen outputs
// refused by name, and a whole small ViT (full and causal, logits and every parameter gradient) against
// the CPU. Every test skips where there is no GPU.
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
  for (DType dt : {DType::f32, DType::bf16})
    for (bool causal : {false, true}) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + (causal ? " causal" : " full"));
      Tensor qkv = randn({2, 97, 3 * 2 * 64}, 31, DType::f32, 4.0);
      Tensor dout = randn({2, 97, 2 * 64}, 32, DType::f32);
      Result cpu = run(qkv, dout, 2, causal, Device::cpu(), dt);
      Result gpu = run(qkv, dout, 2, causal, Device::cuda(0), dt);
      EXPECT_TRUE(mo::test::all_close(gpu.out, cpu.out, dt == DType::f32 ? 1e-4 : 2e-2, "out"));
      EXPECT_TRUE(mo::test::all_close(gpu.dqkv, cpu.dqkv, dt == DType::f32 ? 1e-3 : 2e-2, "dqkv"));
    }
}

TEST(CudaAttention, EntryPointsTakeMisalignedTensors) {
  // cuda::attention_forward / _backward with qkv, out, lse, dout and dqkv each 3 elements into a buffer of 7s:
  // the same bits as on fresh tensors, and the buffers outside the views untouched
  if (!mo::cuda_available()) GTEST_SKIP();
#ifdef MO_WITH_CUDA  // the entry points exist only in a CUDA build
  const Device g = Device::cuda(0);
  const int64_t B = 2, L = 37, H = 2;
  for (DType dt : {DType::bf16, DType::f32})
    for (bool causal : {false, true}) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + (causal ? " causal" : " full"));
      auto off = [&](const Tensor& src) {  // {buffer, view holding src}
        Tensor buf = Tensor::full({src.numel() + 6}, 7.0, src.dtype(), g);
        Tensor v = buf.as_strided(src.shape(), contiguous_strides(src.shape()), 3);
        v.copy_(src);
        return std::pair{buf, v};
      };
      Tensor qkv = randn({B, L, 3 * H * 64}, 71).to(dt).to(g), dout = randn({B, L, H * 64}, 72).to(dt).to(g);
      Tensor out = Tensor::zeros({B, L, H * 64}, dt, g), dqkv = Tensor::zeros(qkv.shape(), dt, g);
      Tensor lse = Tensor::empty({B, H, L}, DType::f32, g);
      cuda::attention_forward(qkv, H, causal, out, lse);
      cuda::attention_backward(dout, qkv, out, lse, H, causal, dqkv);
      auto [qb, q] = off(qkv);
      auto [db, d] = off(dout);
      auto [ob, o] = off(Tensor::zeros(out.shape(), dt, g));
      auto [gb, dq] = off(Tensor::zeros(qkv.shape(), dt, g));
      auto [lb, lse2] = off(Tensor::zeros(lse.shape(), DType::f32, g));
      cuda::attention_forward(q, H, causal, o, lse2);
      cuda::attention_backward(d, q, o, lse2, H, causal, dq);
      EXPECT_TRUE(mo::test::bit_identical(o, out, "out"));
      EXPECT_TRUE(mo::test::bit_identical(lse2, lse, "lse"));
      EXPECT_TRUE(mo::test::bit_identical(dq, dqkv, "dqkv"));
      for (const Tensor& buf : {ob, gb, lb}) {
        const auto v = buf.to(DType::f32).to(Device::cpu()).to_vector<float>();
        for (size_t i : {size_t(0), size_t(2), v.size() - 3, v.size() - 1}) EXPECT_EQ(v[i], 7.0f) << i;
      }
    }
#endif
}

TEST(CudaAttention, HeadDimOtherThan64AndMisshapenOutputsAreRefused) {
  if (!mo::cuda_available()) GTEST_SKIP();
  Tensor qkv = Tensor::zeros({2, 5, 3 * 2 * 32}, DType::f32, Device::cuda(0));
  EXPECT_NE(mo::test::error_of([&] { attention(qkv, 2, false); }).find("head dim 64, got 32"), std::string::npos);
  Tensor f64 = Tensor::zeros({2, 5, 3 * 64}, DType::f64, Device::cuda(0));
  EXPECT_NE(mo::test::error_of([&] { attention(f64, 1, false); }).find("float32 or bfloat16"), std::string::npos);
#ifdef MO_WITH_CUDA
  const Device g = Device::cuda(0);
  Tensor qkv2 = Tensor::zeros({2, 5, 3 * 2 * 64}, DType::bf16, g);  // 2 heads: out must be (2, 5, 128)
  Tensor out = Tensor::empty({2, 5, 64}, DType::bf16, g), lse = Tensor::empty({2, 2, 5}, DType::f32, g);
  const std::string err = mo::test::error_of([&] { cuda::attention_forward(qkv2, 2, false, out, lse); });
  EXPECT_NE(err.find("out bfloat16[2, 5, 64]"), std::string::npos) << err;
#endif
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
