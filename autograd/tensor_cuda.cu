// tensor_cuda.cu: CUDA halves of Tensor::copy_ / fill_ / add_. Copies between host and device go
// through a contiguous staging tensor of the destination dtype; casts and strided gathers are kernels.
#include <cuda_bf16.h>

#include <algorithm>

#include "autograd/cuda_check.h"
#include "autograd/fast_div.cuh"
#include "autograd/tensor_cuda.h"

namespace mo {

namespace {

constexpr int kMaxDims = 8;
struct StridedIndex {
  int nd;
  int64_t shape[kMaxDims];
  int64_t strides[kMaxDims];
};

StridedIndex make_index(const Tensor& t) {
  MO_CHECK(t.dim() <= kMaxDims, "CUDA copy: at most {} dims, got {}", kMaxDims, t.str());
  StridedIndex s{};
  s.nd = static_cast<int>(t.dim());
  for (int i = 0; i < s.nd; ++i) {
    s.shape[i] = t.shape()[i];
    s.strides[i] = t.strides()[i];
  }
  return s;
}

__device__ inline int64_t strided_offset(const StridedIndex& s, int64_t lin) {
  int64_t off = 0;
  for (int d = s.nd - 1; d >= 0; --d) {
    int64_t i = lin % s.shape[d];
    lin /= s.shape[d];
    off += i * s.strides[d];
  }
  return off;
}

template <typename T> __device__ inline float to_f(T v) { return static_cast<float>(v); }
template <> __device__ inline float to_f<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename D, typename S> __device__ inline D cvt(S v) {
  if constexpr (std::is_same_v<D, __nv_bfloat16>) return __float2bfloat16(to_f(v));
  else if constexpr (std::is_same_v<S, __nv_bfloat16>) return static_cast<D>(__bfloat162float(v));
  else return static_cast<D>(v);
}

template <typename D, typename S>
__global__ void copy_kernel(D* dst, StridedIndex di, bool dc, const S* src, StridedIndex si, bool sc, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t so = sc ? i : strided_offset(si, i);
    int64_t dof = dc ? i : strided_offset(di, i);
    dst[dof] = cvt<D>(src[so]);
  }
}

// The same copy for tensors of fewer than 2^31 elements: 32-bit indices decoded with FastDiv per
// dimension (a strided gather such as the model's NCHW → NHWC input permute spent ~140 integer
// instructions per element on 64-bit divisions).
struct FastIndex {
  int nd;
  FastDiv shape[kMaxDims];
  int64_t strides[kMaxDims];
};
FastIndex make_fast_index(const Tensor& t) {
  FastIndex f{};
  f.nd = static_cast<int>(t.dim());
  for (int i = 0; i < f.nd; ++i) {
    f.shape[i] = FastDiv(std::max<int64_t>(1, t.shape()[i]));
    f.strides[i] = t.strides()[i];
  }
  return f;
}
__device__ inline int64_t fast_offset(const FastIndex& s, uint32_t lin) {
  int64_t off = 0;
  for (int d = s.nd - 1; d >= 0; --d) {
    uint32_t q, r;
    s.shape[d].divmod(lin, q, r);
    off += static_cast<int64_t>(r) * s.strides[d];
    lin = q;
  }
  return off;
}
template <typename D, typename S>
__global__ void copy_kernel32(D* __restrict__ dst, FastIndex di, bool dc, const S* __restrict__ src, FastIndex si,
                              bool sc, uint32_t n) {
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const int64_t so = sc ? i : fast_offset(si, i), dof = dc ? i : fast_offset(di, i);
    dst[dof] = cvt<D>(src[so]);
  }
}

// Planes to channels-last, dst (B, H, W, C) contiguous from src(b, h, w, c) = src[b·sB + c·sC + h·W + w]
// (the model's NCHW → NHWC input permute): one thread per pixel, C reads that are coalesced across the
// threads (consecutive pixels of one plane) and C contiguous writes; one FastDiv per pixel instead of
// four per element.
template <typename D, typename S>
__global__ void planes_to_last_kernel(D* __restrict__ dst, const S* __restrict__ src, uint32_t pixels, FastDiv hw,
                                      int64_t sB, int64_t sC, int C) {
  for (uint32_t p = blockIdx.x * blockDim.x + threadIdx.x; p < pixels; p += gridDim.x * blockDim.x) {
    uint32_t b, r;
    hw.divmod(p, b, r);
    const S* s = src + static_cast<int64_t>(b) * sB + r;
    D* d = dst + static_cast<int64_t>(p) * C;
    for (int c = 0; c < C; ++c) d[c] = cvt<D>(s[c * sC]);
  }
}
bool is_planes_to_last(const Tensor& dst, const Tensor& src) {
  if (dst.dim() != 4 || !dst.is_contiguous() || src.dim() != 4) return false;
  const auto& st = src.strides();
  const int64_t H = dst.size(1), W = dst.size(2), C = dst.size(3);
  return C >= 2 && C <= 16 && st[2] == 1 && (H == 1 || st[1] == W) && st[3] >= H * W && H * W > 1;
}

template <typename T>
__global__ void fill_kernel(T* dst, StridedIndex di, bool dc, T v, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    dst[dc ? i : strided_offset(di, i)] = v;
}

// dst (D) += alpha * src (S) in fp32; S may be bf16 into an f32 D (bf16 gradients into fp32 buffers).
// Groups of 8 elements as 16- or 32-byte vectors when both pointers are 16-byte aligned (nvec > 0), the
// tail and unaligned buffers element by element; __restrict__ (dst never overlaps src) lets the loads of
// the next group issue before the stores of this one.
template <typename T> struct alignas(sizeof(T) * 8 >= 16 ? 16 : sizeof(T) * 8) Vec8 {
  T v[8];
};
template <typename D, typename S>
__global__ void add_kernel(D* __restrict__ dst, const S* __restrict__ src, float alpha, int64_t n, int64_t nvec) {
  const int64_t tid = blockIdx.x * (int64_t)blockDim.x + threadIdx.x, step = (int64_t)gridDim.x * blockDim.x;
  for (int64_t p = tid; p < nvec; p += step) {
    Vec8<D> d = reinterpret_cast<Vec8<D>*>(dst)[p];
    const Vec8<S> a = reinterpret_cast<const Vec8<S>*>(src)[p];
#pragma unroll
    for (int e = 0; e < 8; ++e) d.v[e] = cvt<D>(to_f(d.v[e]) + alpha * to_f(a.v[e]));
    reinterpret_cast<Vec8<D>*>(dst)[p] = d;
  }
  for (int64_t i = nvec * 8 + tid; i < n; i += step) dst[i] = cvt<D>(to_f(dst[i]) + alpha * to_f(src[i]));
}
bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }
__global__ void add_kernel_f64(double* dst, const double* src, double alpha, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    dst[i] += alpha * src[i];
}

int grid_for(int64_t n) { return static_cast<int>(std::min<int64_t>((n + 255) / 256, 132 * 16)); }

template <typename F>
void dispatch(DType t, F&& f) {
  switch (t) {
    case DType::f32: f(float{}); break;
    case DType::f64: f(double{}); break;
    case DType::bf16: f(__nv_bfloat16{}); break;
    case DType::i64: f(int64_t{}); break;
    case DType::u8: f(uint8_t{}); break;
  }
}

void device_copy(const Tensor& dst, const Tensor& src) {
  int64_t n = dst.numel();
  if (dst.dtype() == src.dtype() && dst.is_contiguous() && src.is_contiguous()) {
    CUDA_CHECK(cudaMemcpyAsync(dst.raw_data(), src.raw_data(), dst.nbytes(), cudaMemcpyDeviceToDevice, stream()));
    return;
  }
  if (n < (int64_t{1} << 31) && is_planes_to_last(dst, src)) {
    const int64_t HW = dst.size(1) * dst.size(2), pixels = n / dst.size(3);
    dispatch(dst.dtype(), [&](auto d) {
      dispatch(src.dtype(), [&](auto s) {
        using D = decltype(d);
        using S = decltype(s);
        planes_to_last_kernel<D, S><<<grid_for(pixels), 256, 0, stream()>>>(
            static_cast<D*>(dst.raw_data()), static_cast<const S*>(src.raw_data()), static_cast<uint32_t>(pixels),
            FastDiv(HW), src.strides()[0], src.strides()[3], static_cast<int>(dst.size(3)));
      });
    });
    CUDA_CHECK_LAUNCH();
    return;
  }
  if (n < (int64_t{1} << 31)) {
    MO_CHECK(dst.dim() <= kMaxDims && src.dim() <= kMaxDims, "CUDA copy: at most {} dims, got {} <- {}", kMaxDims,
             dst.str(), src.str());
    const FastIndex di = make_fast_index(dst), si = make_fast_index(src);
    dispatch(dst.dtype(), [&](auto d) {
      dispatch(src.dtype(), [&](auto s) {
        using D = decltype(d);
        using S = decltype(s);
        copy_kernel32<D, S><<<grid_for(n), 256, 0, stream()>>>(static_cast<D*>(dst.raw_data()), di, dst.is_contiguous(),
                                                               static_cast<const S*>(src.raw_data()), si,
                                                               src.is_contiguous(), static_cast<uint32_t>(n));
      });
    });
    CUDA_CHECK_LAUNCH();
    return;
  }
  auto di = make_index(dst);
  auto si = make_index(src);
  dispatch(dst.dtype(), [&](auto d) {
    dispatch(src.dtype(), [&](auto s) {
      using D = decltype(d);
      using S = decltype(s);
      copy_kernel<D, S><<<grid_for(n), 256, 0, stream()>>>(static_cast<D*>(dst.raw_data()), di, dst.is_contiguous(),
                                                           static_cast<const S*>(src.raw_data()), si,
                                                           src.is_contiguous(), n);
    });
  });
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void cuda_copy(const Tensor& dst, const Tensor& src) {
  bool dcu = dst.device().is_cuda(), scu = src.device().is_cuda();
  if (dcu && scu) {
    MO_CHECK(dst.device() == src.device(), "copy_: cross-device copy {} <- {} is not supported", dst.str(), src.str());
    device_copy(dst, src);
    return;
  }
  if (dcu) {  // host -> device: make a contiguous host tensor of the destination dtype first
    Tensor h = src.to(dst.dtype()).contiguous();
    if (dst.is_contiguous()) {
      CUDA_CHECK(cudaMemcpyAsync(dst.raw_data(), h.raw_data(), h.nbytes(), cudaMemcpyHostToDevice, stream()));
      CUDA_CHECK(cudaStreamSynchronize(stream()));  // h is pageable and freed on return
    } else {
      Tensor d = Tensor::empty(dst.shape(), dst.dtype(), dst.device());
      CUDA_CHECK(cudaMemcpyAsync(d.raw_data(), h.raw_data(), h.nbytes(), cudaMemcpyHostToDevice, stream()));
      CUDA_CHECK(cudaStreamSynchronize(stream()));
      device_copy(dst, d);
    }
    return;
  }
  // device -> host
  Tensor d = src.contiguous();
  Tensor h = Tensor::empty(src.shape(), src.dtype(), Device::cpu());
  CUDA_CHECK(cudaMemcpyAsync(h.raw_data(), d.raw_data(), d.nbytes(), cudaMemcpyDeviceToHost, stream()));
  CUDA_CHECK(cudaStreamSynchronize(stream()));
  Tensor(dst).copy_(h);
}

void cuda_fill(const Tensor& dst, double v) {
  int64_t n = dst.numel();
  if (v == 0.0 && dst.is_contiguous()) {
    CUDA_CHECK(cudaMemsetAsync(dst.raw_data(), 0, dst.nbytes(), stream()));
    return;
  }
  auto di = make_index(dst);
  dispatch(dst.dtype(), [&](auto z) {
    using T = decltype(z);
    T val;
    if constexpr (std::is_same_v<T, __nv_bfloat16>) val = __float2bfloat16(static_cast<float>(v));
    else val = static_cast<T>(v);
    fill_kernel<T><<<grid_for(n), 256, 0, stream()>>>(static_cast<T*>(dst.raw_data()), di, dst.is_contiguous(), val, n);
  });
  CUDA_CHECK_LAUNCH();
}

// dst += src for many (f32 dst, bf16 or f32 src) pairs, up to kAccPerLaunch per launch: blockIdx.y picks
// the pair, the x blocks stride over its elements (8-wide where both pointers are 16-byte aligned).
// The table travels as the kernel's parameter (< 4 KB), so nothing is uploaded.
struct AccItem {
  float* dst;
  const void* src;
  int64_t n;
  int bf16;
};
constexpr int kAccPerLaunch = 120;
struct AccTable {
  AccItem it[kAccPerLaunch];
};
template <typename S>
__device__ void accumulate_one(float* __restrict__ d, const S* __restrict__ s, int64_t n) {
  const int64_t tid = blockIdx.x * (int64_t)blockDim.x + threadIdx.x, step = (int64_t)gridDim.x * blockDim.x;
  const bool al = ((reinterpret_cast<uintptr_t>(d) | reinterpret_cast<uintptr_t>(s)) & 15u) == 0;
  const int64_t nvec = al ? n / 8 : 0;
  for (int64_t p = tid; p < nvec; p += step) {
    Vec8<float> dv = reinterpret_cast<Vec8<float>*>(d)[p];
    const Vec8<S> a = reinterpret_cast<const Vec8<S>*>(s)[p];
#pragma unroll
    for (int e = 0; e < 8; ++e) dv.v[e] = dv.v[e] + to_f(a.v[e]);
    reinterpret_cast<Vec8<float>*>(d)[p] = dv;
  }
  for (int64_t i = nvec * 8 + tid; i < n; i += step) d[i] = d[i] + to_f(s[i]);
}
__global__ void accumulate_many_kernel(AccTable t) {
  const AccItem& a = t.it[blockIdx.y];
  if (a.bf16) accumulate_one(a.dst, static_cast<const __nv_bfloat16*>(a.src), a.n);
  else accumulate_one(a.dst, static_cast<const float*>(a.src), a.n);
}

void cuda_accumulate_many(const std::vector<std::pair<Tensor, Tensor>>& pairs) {
  size_t i = 0;
  while (i < pairs.size()) {
    AccTable t{};
    unsigned count = 0;
    int64_t most = 0;
    for (; i < pairs.size() && count < kAccPerLaunch; ++i) {
      const Tensor &d = pairs[i].first, &s = pairs[i].second;
      MO_CHECK(d.dtype() == DType::f32 && d.is_contiguous() && s.is_contiguous() && s.numel() == d.numel() &&
                   (s.dtype() == DType::bf16 || s.dtype() == DType::f32) && d.is_cuda() && s.is_cuda(),
               "accumulate: cannot add {} into {}", s.str(), d.str());
      if (d.numel() == 0) continue;
      t.it[count++] = {d.data<float>(), s.raw_data(), d.numel(), s.dtype() == DType::bf16 ? 1 : 0};
      most = std::max(most, d.numel());
    }
    if (count == 0) continue;
    const unsigned gx = static_cast<unsigned>(std::min<int64_t>(32, (most / 8 + 255) / 256 + 1));
    accumulate_many_kernel<<<dim3(gx, count), 256, 0, stream()>>>(t);
    CUDA_CHECK_LAUNCH();
  }
}

void cuda_add_(const Tensor& dst, const Tensor& src_in, double alpha) {
  MO_CHECK(dst.is_contiguous(), "add_: CUDA destination must be contiguous, got {}", dst.str());
  // A bf16 source adds into an f32 destination directly (no converted temporary).
  const bool bf16_into_f32 = dst.dtype() == DType::f32 && src_in.dtype() == DType::bf16;
  Tensor src = src_in.dtype() == dst.dtype() || bf16_into_f32 ? src_in.contiguous() : src_in.to(dst.dtype()).contiguous();
  int64_t n = dst.numel();
  // the two buffers must not overlap (the kernel's __restrict__); an overlapping self-add goes via a copy
  const char *d0 = static_cast<const char*>(dst.raw_data()), *s0 = static_cast<const char*>(src.raw_data());
  if (d0 < s0 + src.nbytes() && s0 < d0 + dst.nbytes() && n > 0) src = src.clone();
  const int64_t nvec = aligned16(dst.raw_data()) && aligned16(src.raw_data()) ? n / 8 : 0;
  switch (dst.dtype()) {
    case DType::f32:
      if (bf16_into_f32)
        add_kernel<float, __nv_bfloat16><<<grid_for(n), 256, 0, stream()>>>(
            dst.data<float>(), static_cast<const __nv_bfloat16*>(src.raw_data()), (float)alpha, n, nvec);
      else
        add_kernel<float, float><<<grid_for(n), 256, 0, stream()>>>(dst.data<float>(), src.data<float>(), (float)alpha, n,
                                                                    nvec);
      break;
    case DType::bf16:
      add_kernel<__nv_bfloat16, __nv_bfloat16><<<grid_for(n), 256, 0, stream()>>>(
          static_cast<__nv_bfloat16*>(dst.raw_data()), static_cast<const __nv_bfloat16*>(src.raw_data()),
          (float)alpha, n, nvec);
      break;
    case DType::f64:
      add_kernel_f64<<<grid_for(n), 256, 0, stream()>>>(dst.data<double>(), src.data<double>(), alpha, n);
      break;
    default: MO_FAIL("add_: unsupported dtype {}", dst.str());
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace mo
