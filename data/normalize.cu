// normalize.cu: the CUDA kernel of normalize.h (one thread per output value; the CPU twin is in
// normalize.cpp and draws the same Philox numbers).
#include "autograd/cuda_check.h"
#include "autograd/rng.h"
#include "data/normalize.h"

namespace mo::data {
namespace {

struct Params {
  float mean[3], std[3];
  int B, H, W;
  bool channels_last;
  uint64_t seed;
};

__device__ __forceinline__ void store(float* o, int64_t i, float v) { o[i] = v; }
__device__ __forceinline__ void store(uint16_t* o, int64_t i, float v) {  // bf16, round to nearest even
  uint32_t u = __float_as_uint(v);
  if ((u & 0x7fffffffu) > 0x7f800000u) {
    o[i] = 0x7fc0;
    return;
  }
  u += 0x7fffu + ((u >> 16) & 1u);
  o[i] = static_cast<uint16_t>(u >> 16);
}

template <typename T>
__global__ void normalize_erase_kernel(const uint8_t* __restrict__ img, const int64_t* __restrict__ meta, Params p,
                                       T* __restrict__ out) {
  const int64_t plane = static_cast<int64_t>(p.H) * p.W;
  const int64_t n = plane * 3 * p.B;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    // i walks the output in its own layout
    int64_t b, c, pix;
    if (p.channels_last) {
      b = i / (plane * 3);
      const int64_t r = i - b * plane * 3;
      pix = r / 3;
      c = r - pix * 3;
    } else {
      b = i / (plane * 3);
      const int64_t r = i - b * plane * 3;
      c = r / plane;
      pix = r - c * plane;
    }
    const int64_t y = pix / p.W, x = pix - y * p.W;
    const int64_t* m = meta + b * kMetaCols;
    const bool erased = m[2] > 0 && y >= m[0] && y < m[0] + m[2] && x >= m[1] && x < m[1] + m[3];
    float v;
    if (erased) {
      v = philox_normal(p.seed, static_cast<uint64_t>(m[4]), static_cast<uint64_t>(c * plane + pix));
    } else {
      v = (static_cast<float>(img[(b * plane + pix) * 3 + c]) - p.mean[c]) / p.std[c];
    }
    store(out, i, v);
  }
}

}  // namespace

void normalize_erase_cuda(const Tensor& images, const Tensor& meta, uint64_t seed, const NormalizeSpec& spec, Tensor& out) {
  Params p;
  for (int c = 0; c < 3; ++c) p.mean[c] = spec.mean[c], p.std[c] = spec.std[c];
  p.B = static_cast<int>(images.size(0));
  p.H = static_cast<int>(images.size(1));
  p.W = static_cast<int>(images.size(2));
  p.channels_last = spec.channels_last;
  p.seed = seed;
  const int64_t n = out.numel();
  if (n == 0) return;
  const int threads = 256;
  const int blocks = static_cast<int>(std::min<int64_t>((n + threads - 1) / threads, 65535 * 8));
  cudaStream_t s = stream();
  if (spec.dtype == DType::f32) {
    normalize_erase_kernel<float><<<blocks, threads, 0, s>>>(images.data<uint8_t>(), meta.data<int64_t>(), p,
                                                             out.data<float>());
  } else {
    normalize_erase_kernel<uint16_t><<<blocks, threads, 0, s>>>(
        images.data<uint8_t>(), meta.data<int64_t>(), p, reinterpret_cast<uint16_t*>(out.data<bf16_t>()));
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace mo::data
