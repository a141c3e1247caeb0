// elementwise.cu: CUDA halves of add / mul / scale / mul_channel (see elementwise.h).
//
// binary, scale: flat contiguous arrays, cu::map2 / cu::map1 — a grid-stride loop over 16-byte packs
//   (4 floats or 8 bf16 per thread per step) when the pointers are aligned, fp32 math, one rounding.
// mul_channel: out[r, c] = x[r, c]·γ[c] on a row-major (R, C) view; 16-byte packs when C is a multiple
//   of the pack width (a pack then never straddles two rows and γ's pack is aligned too).
// mul_channel_grad_gamma: dγ[c] = Σ_r dy[r, c]·x[r, c] with cu::column_sum (fixed-order two-pass
//   column reduction, fp32 accumulation, no atomics: bit-identical from run to run).
#include "ops/elementwise/elementwise.h"

#include "ops/cuda_utils.cuh"

namespace mo::cuda {

namespace {

struct AddOp {
  __device__ float operator()(float a, float b) const { return a + b; }
};
struct MulOp {
  __device__ float operator()(float a, float b) const { return a * b; }
};
struct ScaleOp {
  float s;
  __device__ float operator()(float a) const { return s * a; }
};

template <typename T>
__global__ void mul_channel_kernel(const T* x, const T* gamma, T* out, int64_t n, int64_t C, bool vec) {
  constexpr int V = cu::Pack<T>::N;
  const int64_t tid = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  if (vec) {  // C % V == 0 and all pointers 16-byte aligned
    for (int64_t p = tid; p < n / V; p += step) {
      const int64_t i = p * V;
      const cu::Pack<T> vx = cu::load_pack(x + i), vg = cu::load_pack(gamma + i % C);
      cu::Pack<T> vo;
#pragma unroll
      for (int k = 0; k < V; ++k) vo.v[k] = cu::from_float<T>(cu::to_float(vx.v[k]) * cu::to_float(vg.v[k]));
      cu::store_pack(out + i, vo);
    }
  } else {
    for (int64_t i = tid; i < n; i += step)
      out[i] = cu::from_float<T>(cu::to_float(x[i]) * cu::to_float(gamma[i % C]));
  }
}

// f(b, r, c) = dy[r, c]·x[r, c] for the column reduction.
template <typename T>
struct ProductLoad {
  const T* dy;
  const T* x;
  int64_t C;
  __device__ float operator()(int64_t, int64_t r, int64_t c) const {
    return cu::to_float(dy[r * C + c]) * cu::to_float(x[r * C + c]);
  }
};

void check_flat(const char* op, const Tensor& a, const Tensor& out) {
  MO_CHECK(a.is_contiguous() && out.is_contiguous() && a.numel() == out.numel() && a.dtype() == out.dtype() &&
               a.is_cuda() && out.device() == a.device(),
           "{}: CUDA kernel expects contiguous tensors of one dtype and size, got {} -> {}", op, a.str(), out.str());
}

}  // namespace

void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  const char* name = op == BinaryOp::add ? "add" : "mul";
  check_flat(name, a, out);
  check_flat(name, b, out);
  cu::float_dispatch(name, a, [&](auto z) {
    using T = decltype(z);
    if (op == BinaryOp::add) cu::map2<T>(AddOp{}, cu::ptr<const T>(a), cu::ptr<const T>(b), cu::ptr<T>(out), a.numel());
    else cu::map2<T>(MulOp{}, cu::ptr<const T>(a), cu::ptr<const T>(b), cu::ptr<T>(out), a.numel());
  });
}

void scale(const Tensor& a, float s, const Tensor& out) {
  check_flat("scale", a, out);
  cu::float_dispatch("scale", a, [&](auto z) {
    using T = decltype(z);
    cu::map1<T>(ScaleOp{s}, cu::ptr<const T>(a), cu::ptr<T>(out), a.numel());
  });
}

void mul_channel(const Tensor& x, const Tensor& gamma, const Tensor& out) {
  check_flat("mul_channel", x, out);
  MO_CHECK(gamma.dim() == 1 && gamma.is_contiguous() && gamma.dtype() == x.dtype() && x.dim() >= 1 &&
               x.size(-1) == gamma.size(0) && gamma.device() == x.device(),
           "mul_channel: gamma {} does not match the last dim of {}", gamma.str(), x.str());
  const int64_t n = x.numel(), C = gamma.size(0);
  if (n == 0) return;
  cu::float_dispatch("mul_channel", x, [&](auto z) {
    using T = decltype(z);
    constexpr int V = cu::Pack<T>::N;
    const bool vec = C % V == 0 && cu::aligned16(x.raw_data()) && cu::aligned16(gamma.raw_data()) &&
                     cu::aligned16(out.raw_data());
    mul_channel_kernel<T><<<cu::grid_1d(vec ? n / V : n, 256), 256, 0, stream()>>>(
        cu::ptr<const T>(x), cu::ptr<const T>(gamma), cu::ptr<T>(out), n, C, vec);
    CUDA_CHECK_LAUNCH();
  });
}

void mul_channel_grad_gamma(const Tensor& dy, const Tensor& x, const Tensor& dgamma) {
  check_flat("mul_channel", dy, x);
  MO_CHECK(dgamma.dim() == 1 && dgamma.is_contiguous() && dgamma.dtype() == x.dtype() && x.dim() >= 1 &&
               x.size(-1) == dgamma.size(0) && dgamma.device() == x.device(),
           "mul_channel: dgamma {} does not match the last dim of {}", dgamma.str(), x.str());
  const int64_t C = dgamma.size(0), R = C > 0 ? x.numel() / C : 0;
  if (C == 0) return;
  cu::float_dispatch("mul_channel", x, [&](auto z) {
    using T = decltype(z);
    if (R == 0) {
      CUDA_CHECK(cudaMemsetAsync(dgamma.raw_data(), 0, dgamma.nbytes(), stream()));
      return;
    }
    cu::column_sum(ProductLoad<T>{cu::ptr<const T>(dy), cu::ptr<const T>(x), C}, 1, R, C, 1.0f, cu::ptr<T>(dgamma),
                   x.device());
  });
}

}  // namespace mo::cuda
