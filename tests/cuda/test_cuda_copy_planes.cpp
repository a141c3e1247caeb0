// test_cuda_copy_planes.cpp: the CUDA copy of a planes-layout view into channels-last (autograd/
// tensor_cuda.cu, planes_to_last_kernel: the model's NCHW → NHWC input permute) is exact against the
// CPU copy, for several channel counts, odd sizes, an offset view, a batch stride that is not C·H·W
// and a dtype conversion. Skips without a GPU.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "autograd/cuda_allocator.h"
#include "autograd/tensor.h"
#include "ops/shape/shape.h"

using namespace mo;

namespace {

Tensor host_rand(const Shape& s, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(-3.0f, 3.0f);
  std::vector<float> v(shape_numel(s));
  for (auto& x : v) x = dist(gen);
  return Tensor::from_vector(v, s);
}

bool same(const Tensor& a, const Tensor& b) {
  auto va = a.to_vector<float>(), vb = b.to_vector<float>();
  return a.shape() == b.shape() && std::memcmp(va.data(), vb.data(), va.size() * sizeof(float)) == 0;
}

}  // namespace

TEST(CudaCopy, CudaPlanesToChannelsLast) {
  if (!mo::cuda_available()) GTEST_SKIP();
  for (DType dt : {DType::bf16, DType::f32}) {
    for (Shape s : {Shape{2, 3, 17, 23}, Shape{1, 5, 9, 1}, Shape{3, 2, 1, 7}, Shape{4, 16, 6, 6}, Shape{1, 1, 8, 8}}) {
      Tensor h = host_rand(s, 7).to(dt), g = h.to(Device::cuda(0));
      EXPECT_TRUE(same(permute(g, {0, 2, 3, 1}), permute(h, {0, 2, 3, 1}))) << shape_str(s);
    }
    // an offset view with a batch stride larger than C·H·W: channels 1..3 of a 5-channel batch
    Tensor h = host_rand({3, 5, 11, 13}, 9).to(dt), g = h.to(Device::cuda(0));
    const Shape st = contiguous_strides(h.shape());
    Tensor hv = h.as_strided({3, 3, 11, 13}, st, h.offset() + st[1]), gv = g.as_strided({3, 3, 11, 13}, st, g.offset() + st[1]);
    EXPECT_TRUE(same(permute(gv, {0, 2, 3, 1}), permute(hv, {0, 2, 3, 1}))) << "offset view";
  }
  // float32 planes into a bfloat16 channels-last tensor (copy_ with a conversion)
  Tensor h = host_rand({2, 3, 10, 12}, 11), g = h.to(Device::cuda(0));
  Tensor dg = Tensor::empty({2, 10, 12, 3}, DType::bf16, Device::cuda(0));
  dg.copy_(g.as_strided({2, 10, 12, 3}, {360, 12, 1, 120}, g.offset()));
  Tensor dh = Tensor::empty({2, 10, 12, 3}, DType::bf16);
  dh.copy_(h.as_strided({2, 10, 12, 3}, {360, 12, 1, 120}, h.offset()));
  EXPECT_TRUE(same(dg, dh)) << "f32 -> bf16";
}
