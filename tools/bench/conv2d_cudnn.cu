// conv2d_cudnn.cu: the cuDNN convolution, kept only as the kernel benchmark's comparison for the
// dense 3×3 stride-2 convolutions (mo_bench_kernels --only conv). It lost to ops/conv/conv2d_gemm.cu
// (im2col + cuBLASLt) on every MambaOut shape (docs/optimization_notes.md has the numbers), so it left
// ops/; the direct kernels below are its fallback and the benchmark's simple reference.
//
// Layouts: x (B, H, W, Ci), y (B, Ho, Wo, Co), weight (Co, Ci, kh, kw) = PyTorch's OIHW.
// cuDNN path (MO_WITH_CUDNN): NHWC tensor descriptors and an NHWC ("KRSC" = OHWI) filter, so each call
//   first reorders the small weight OIHW -> OHWI into a temporary (and the weight gradient back).
//   Compute type fp32 for f32 and bf16 data; for f32 the math type is CUDNN_FMA_MATH (no TF32) unless
//   MO_ALLOW_TF32=1. Algorithms come from cuDNN's heuristics (…_v7), keeping only those that report
//   CUDNN_DETERMINISTIC and whose workspace query succeeds; the choice is cached per shape, so a shape
//   always runs the same algorithm. Workspaces come from the caching allocator. Bias add and bias
//   gradient are our own kernels (db via cuda::sum_rows: fixed-order, no atomics).
// Direct path (no cuDNN, MO_CONV_DIRECT=1, tensors over 2^31 elements, no deterministic cuDNN
//   algorithm, or cuDNN failing to set up — the last two print a note to stderr): one thread per output element for y and dx (gathering, fixed order), one block per
//   weight element for dW (block reduction over the B·Ho·Wo pixels). Slow but simple and exact; the
//   model only has four such convolutions (stem + downsamples), so this is a safety net, not a goal.
#include "tools/bench/conv2d_cudnn.h"

#include <atomic>
#include <climits>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>

#include "ops/cuda_utils.cuh"
#include "ops/linear/linear.h"

#ifdef MO_WITH_CUDNN
#include <cudnn.h>
#endif

namespace mo::bench {

using cuda::sum_rows;

namespace {

struct Geo {
  int64_t B, H, W, Ci, Co, kh, kw, Ho, Wo;
  int stride, pad;
  int64_t M() const { return B * Ho * Wo; }  // output pixels
};

Geo make_geo(const Tensor& x, const Tensor& w, int stride, int pad) {
  MO_CHECK(x.dim() == 4 && w.dim() == 4 && x.size(3) == w.size(1) && stride >= 1 && pad >= 0,
           "cuda conv2d: input {} (B, H, W, Ci) does not match weight {} (Co, Ci, kh, kw), stride {} pad {}", x.str(),
           w.str(), stride, pad);
  Geo g{x.size(0), x.size(1), x.size(2), x.size(3), w.size(0), w.size(2), w.size(3), 0, 0, stride, pad};
  g.Ho = (g.H + 2 * pad - g.kh) / stride + 1;
  g.Wo = (g.W + 2 * pad - g.kw) / stride + 1;
  MO_CHECK(g.Ho > 0 && g.Wo > 0, "cuda conv2d: input {} too small for weight {} with pad {}", x.str(), w.str(), pad);
  return g;
}

// ---- weight reorders (OIHW <-> OHWI), one thread per element of the destination ------------------
template <typename T>
__global__ void oihw_to_ohwi_kernel(const T* __restrict__ src, T* __restrict__ dst, int64_t Co, int64_t Ci,
                                    int64_t khw) {
  const int64_t n = Co * Ci * khw;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < n;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t o = t / (khw * Ci), r = t % (khw * Ci), k = r / Ci, ci = r % Ci;
    dst[t] = src[(o * Ci + ci) * khw + k];
  }
}
template <typename T>
__global__ void ohwi_to_oihw_kernel(const T* __restrict__ src, T* __restrict__ dst, int64_t Co, int64_t Ci,
                                    int64_t khw) {
  const int64_t n = Co * Ci * khw;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < n;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t o = t / (Ci * khw), r = t % (Ci * khw), ci = r / khw, k = r % khw;
    dst[t] = src[(o * khw + k) * Ci + ci];
  }
}

template <typename T>
Tensor to_ohwi(const Tensor& w, const Geo& g) {
  Tensor wr = Tensor::empty({g.Co, g.kh, g.kw, g.Ci}, w.dtype(), w.device());
  const int64_t n = w.numel();
  oihw_to_ohwi_kernel<T><<<cu::grid_1d(n, 256), 256, 0, stream()>>>(cu::ptr<const T>(w), cu::ptr<T>(wr), g.Co, g.Ci,
                                                                    g.kh * g.kw);
  CUDA_CHECK_LAUNCH();
  return wr;
}
template <typename T>
void from_ohwi(const Tensor& wr, const Tensor& w, const Geo& g) {
  const int64_t n = w.numel();
  ohwi_to_oihw_kernel<T><<<cu::grid_1d(n, 256), 256, 0, stream()>>>(cu::ptr<const T>(wr), cu::ptr<T>(w), g.Co, g.Ci,
                                                                    g.kh * g.kw);
  CUDA_CHECK_LAUNCH();
}

// y[m, co] += b[co] (fp32 add, one rounding).
template <typename T>
__global__ void add_bias_kernel(T* __restrict__ y, const T* __restrict__ b, int64_t M, int64_t Co) {
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < M * Co;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x)
    y[t] = cu::from_float<T>(cu::to_float(y[t]) + cu::to_float(b[t % Co]));
}

// ---- direct kernels (weights in OHWI) -------------------------------------------------------------
struct KGeo {  // the geometry as kernel arguments
  int64_t B, H, W, Ci, Co, kh, kw, Ho, Wo, stride, pad;
};
KGeo kgeo(const Geo& g) { return {g.B, g.H, g.W, g.Ci, g.Co, g.kh, g.kw, g.Ho, g.Wo, g.stride, g.pad}; }

// y[b, oy, ox, co] = Σ_{ky, kx, ci} x[b, iy, ix, ci] · wr[co, ky, kx, ci] (+ bias[co])
template <typename T>
__global__ void direct_forward_kernel(const T* __restrict__ x, const T* __restrict__ wr, const T* __restrict__ bias,
                                      T* __restrict__ y, KGeo g) {
  const int64_t n = g.B * g.Ho * g.Wo * g.Co;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < n;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t co = t % g.Co, m = t / g.Co, ox = m % g.Wo, oy = (m / g.Wo) % g.Ho, b = m / (g.Wo * g.Ho);
    float acc = 0.0f;
    for (int64_t ky = 0; ky < g.kh; ++ky) {
      const int64_t iy = oy * g.stride - g.pad + ky;
      if (iy < 0 || iy >= g.H) continue;
      for (int64_t kx = 0; kx < g.kw; ++kx) {
        const int64_t ix = ox * g.stride - g.pad + kx;
        if (ix < 0 || ix >= g.W) continue;
        const T* xp = x + ((b * g.H + iy) * g.W + ix) * g.Ci;
        const T* wp = wr + ((co * g.kh + ky) * g.kw + kx) * g.Ci;
        for (int64_t ci = 0; ci < g.Ci; ++ci) acc += cu::to_float(xp[ci]) * cu::to_float(wp[ci]);
      }
    }
    if (bias != nullptr) acc += cu::to_float(bias[co]);
    y[t] = cu::from_float<T>(acc);
  }
}

// dx[b, iy, ix, ci] = Σ over (ky, kx) with iy = oy·s − p + ky, ix = ox·s − p + kx, and co of
//   dy[b, oy, ox, co] · wr[co, ky, kx, ci]
template <typename T>
__global__ void direct_backward_data_kernel(const T* __restrict__ dy, const T* __restrict__ wr, T* __restrict__ dx,
                                            KGeo g) {
  const int64_t n = g.B * g.H * g.W * g.Ci;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < n;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t ci = t % g.Ci, p = t / g.Ci, ix = p % g.W, iy = (p / g.W) % g.H, b = p / (g.W * g.H);
    float acc = 0.0f;
    for (int64_t ky = 0; ky < g.kh; ++ky) {
      const int64_t ty = iy + g.pad - ky;
      if (ty < 0 || ty % g.stride != 0) continue;
      const int64_t oy = ty / g.stride;
      if (oy >= g.Ho) continue;
      for (int64_t kx = 0; kx < g.kw; ++kx) {
        const int64_t tx = ix + g.pad - kx;
        if (tx < 0 || tx % g.stride != 0) continue;
        const int64_t ox = tx / g.stride;
        if (ox >= g.Wo) continue;
        const T* dp = dy + ((b * g.Ho + oy) * g.Wo + ox) * g.Co;
        const T* wp = wr + (ky * g.kw + kx) * g.Ci + ci;
        const int64_t wstride = g.kh * g.kw * g.Ci;
        for (int64_t co = 0; co < g.Co; ++co) acc += cu::to_float(dp[co]) * cu::to_float(wp[co * wstride]);
      }
    }
    dx[t] = cu::from_float<T>(acc);
  }
}

// dwr[co, ky, kx, ci] = Σ_{b, oy, ox} dy[b, oy, ox, co] · x[b, iy, ix, ci]; one block per weight element.
template <typename T>
__global__ void direct_backward_filter_kernel(const T* __restrict__ dy, const T* __restrict__ x, T* __restrict__ dwr,
                                              KGeo g) {
  __shared__ float red[33];
  const int64_t e = blockIdx.x;  // OHWI index
  const int64_t ci = e % g.Ci, kx = (e / g.Ci) % g.kw, ky = (e / (g.Ci * g.kw)) % g.kh, co = e / (g.Ci * g.kw * g.kh);
  const int64_t M = g.B * g.Ho * g.Wo;
  float acc = 0.0f;
  for (int64_t m = threadIdx.x; m < M; m += blockDim.x) {
    const int64_t ox = m % g.Wo, oy = (m / g.Wo) % g.Ho, b = m / (g.Wo * g.Ho);
    const int64_t iy = oy * g.stride - g.pad + ky, ix = ox * g.stride - g.pad + kx;
    if (iy < 0 || iy >= g.H || ix < 0 || ix >= g.W) continue;
    acc += cu::to_float(dy[m * g.Co + co]) * cu::to_float(x[((b * g.H + iy) * g.W + ix) * g.Ci + ci]);
  }
  acc = cu::block_sum(acc, red);
  if (threadIdx.x == 0) dwr[e] = cu::from_float<T>(acc);
}

template <typename T>
void direct_forward(const Tensor& x, const Tensor& wr, const Tensor& b, const Tensor& y, const Geo& g) {
  direct_forward_kernel<T><<<cu::grid_1d(y.numel(), 256), 256, 0, stream()>>>(
      cu::ptr<const T>(x), cu::ptr<const T>(wr), b.defined() ? cu::ptr<const T>(b) : nullptr, cu::ptr<T>(y), kgeo(g));
  CUDA_CHECK_LAUNCH();
}
template <typename T>
void direct_backward_data(const Tensor& dy, const Tensor& wr, const Tensor& dx, const Geo& g) {
  direct_backward_data_kernel<T><<<cu::grid_1d(dx.numel(), 256), 256, 0, stream()>>>(
      cu::ptr<const T>(dy), cu::ptr<const T>(wr), cu::ptr<T>(dx), kgeo(g));
  CUDA_CHECK_LAUNCH();
}
template <typename T>
void direct_backward_filter(const Tensor& dy, const Tensor& x, const Tensor& dwr, const Geo& g) {
  const int64_t n = dwr.numel();
  MO_CHECK(n <= INT_MAX, "cuda conv2d: weight gradient of {} elements is too large for the direct kernel", n);
  direct_backward_filter_kernel<T><<<static_cast<unsigned>(n), 256, 0, stream()>>>(
      cu::ptr<const T>(dy), cu::ptr<const T>(x), cu::ptr<T>(dwr), kgeo(g));
  CUDA_CHECK_LAUNCH();
}

// MO_CONV_DIRECT=1 bypasses cuDNN (read at every call so a test can switch it; getenv is cheap).
bool force_direct() {
  const char* e = std::getenv("MO_CONV_DIRECT");
  return e != nullptr && std::strcmp(e, "1") == 0;
}

#ifdef MO_WITH_CUDNN
// ---- cuDNN ------------------------------------------------------------------------------------------
cudnnHandle_t cudnn_handle() {
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  thread_local std::map<int, cudnnHandle_t> handles;  // never destroyed: may outlive the context
  auto it = handles.find(dev);
  cudnnHandle_t h;
  if (it != handles.end()) {
    h = it->second;
  } else {
    CUDNN_CHECK(cudnnCreate(&h));
    handles[dev] = h;
  }
  CUDNN_CHECK(cudnnSetStream(h, stream()));
  return h;
}

// Descriptors for one call (RAII).
struct ConvDescs {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  ConvDescs(const Geo& g, cudnnDataType_t dt) {
    try {
      init(g, dt);
    } catch (...) {
      destroy();
      throw;
    }
  }
  void init(const Geo& g, cudnnDataType_t dt) {
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&x));
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&y));
    CUDNN_CHECK(cudnnCreateFilterDescriptor(&w));
    CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&conv));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(x, CUDNN_TENSOR_NHWC, dt, (int)g.B, (int)g.Ci, (int)g.H, (int)g.W));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(y, CUDNN_TENSOR_NHWC, dt, (int)g.B, (int)g.Co, (int)g.Ho, (int)g.Wo));
    CUDNN_CHECK(cudnnSetFilter4dDescriptor(w, dt, CUDNN_TENSOR_NHWC, (int)g.Co, (int)g.Ci, (int)g.kh, (int)g.kw));
    CUDNN_CHECK(cudnnSetConvolution2dDescriptor(conv, g.pad, g.pad, g.stride, g.stride, 1, 1, CUDNN_CROSS_CORRELATION,
                                                CUDNN_DATA_FLOAT));
    int n = 0, c = 0, h = 0, wd = 0;
    CUDNN_CHECK(cudnnGetConvolution2dForwardOutputDim(conv, x, w, &n, &c, &h, &wd));
    MO_CHECK(n == g.B && c == g.Co && h == g.Ho && wd == g.Wo,
             "cuda conv2d: cuDNN output dims ({}, {}, {}, {}) differ from ours (B {}, Co {}, Ho {}, Wo {})", n, c, h, wd,
             g.B, g.Co, g.Ho, g.Wo);
  }
  ~ConvDescs() { destroy(); }
  void destroy() {
    if (conv) cudnnDestroyConvolutionDescriptor(conv);
    if (w) cudnnDestroyFilterDescriptor(w);
    if (y) cudnnDestroyTensorDescriptor(y);
    if (x) cudnnDestroyTensorDescriptor(x);
    conv = nullptr, w = nullptr, x = nullptr, y = nullptr;
  }
  ConvDescs(const ConvDescs&) = delete;
  ConvDescs& operator=(const ConvDescs&) = delete;
};

enum class Pass { fwd, bwd_data, bwd_filter };
struct Choice {
  bool direct = true;  // no usable deterministic cuDNN algorithm
  int algo = 0;
  cudnnMathType_t math = CUDNN_DEFAULT_MATH;
  size_t workspace = 0;
};
// (device, pass, dtype, tf32, B, H, W, Ci, Co, kh, kw, stride, pad)
using ConvKey = std::tuple<int, int, int, bool, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int, int>;

constexpr size_t kMaxWorkspace = size_t(1) << 30;

size_t workspace_size(cudnnHandle_t h, ConvDescs& d, Pass pass, int algo, cudnnStatus_t* st) {
  size_t sz = 0;
  switch (pass) {
    case Pass::fwd:
      *st = cudnnGetConvolutionForwardWorkspaceSize(h, d.x, d.w, d.conv, d.y, (cudnnConvolutionFwdAlgo_t)algo, &sz);
      break;
    case Pass::bwd_data:
      *st = cudnnGetConvolutionBackwardDataWorkspaceSize(h, d.w, d.y, d.conv, d.x, (cudnnConvolutionBwdDataAlgo_t)algo,
                                                         &sz);
      break;
    case Pass::bwd_filter:
      *st = cudnnGetConvolutionBackwardFilterWorkspaceSize(h, d.x, d.y, d.conv, d.w,
                                                           (cudnnConvolutionBwdFilterAlgo_t)algo, &sz);
      break;
  }
  return sz;
}

// The first heuristic candidate that succeeded, is deterministic, respects the fp32 math rule and whose
// workspace query succeeds. Leaves the chosen math type set on d.conv.
template <typename Perf>
Choice pick(cudnnHandle_t h, ConvDescs& d, Pass pass, const Perf* perf, int n, bool strict_fp32) {
  for (int i = 0; i < n; ++i) {
    const Perf& p = perf[i];
    if (p.status != CUDNN_STATUS_SUCCESS || p.determinism != CUDNN_DETERMINISTIC) continue;
    if (strict_fp32 && (p.mathType == CUDNN_TENSOR_OP_MATH || p.mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION))
      continue;
    const cudnnMathType_t math = strict_fp32 ? CUDNN_FMA_MATH : p.mathType;
    if (cudnnSetConvolutionMathType(d.conv, math) != CUDNN_STATUS_SUCCESS) continue;
    cudnnStatus_t st;
    size_t ws = workspace_size(h, d, pass, static_cast<int>(p.algo), &st);
    if (st != CUDNN_STATUS_SUCCESS || ws > kMaxWorkspace) continue;
    Choice c;
    c.direct = false;
    c.algo = static_cast<int>(p.algo);
    c.math = math;
    c.workspace = ws;
    return c;
  }
  return Choice{};
}

Choice choose(cudnnHandle_t h, ConvDescs& d, Pass pass, const Geo& g, DType dtype) {
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  const bool strict_fp32 = dtype == DType::f32 && !cu::allow_tf32();
  const ConvKey key{dev,  static_cast<int>(pass), static_cast<int>(dtype), strict_fp32, g.B, g.H, g.W, g.Ci, g.Co,
                    g.kh, g.kw,                   g.stride,                g.pad};
  static std::mutex mu;
  static auto* cache = new std::map<ConvKey, Choice>();  // intentionally leaked
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = cache->find(key);
    if (it != cache->end()) {
      if (!it->second.direct) CUDNN_CHECK(cudnnSetConvolutionMathType(d.conv, it->second.math));
      return it->second;
    }
  }
  // Query with the math type we want, then filter (see pick()).
  CUDNN_CHECK(cudnnSetConvolutionMathType(d.conv, strict_fp32 ? CUDNN_FMA_MATH : CUDNN_DEFAULT_MATH));
  Choice c;
  int n = 0;
  switch (pass) {
    case Pass::fwd: {
      cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
      if (cudnnGetConvolutionForwardAlgorithm_v7(h, d.x, d.w, d.conv, d.y, CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &n, perf) !=
          CUDNN_STATUS_SUCCESS)
        n = 0;
      c = pick(h, d, pass, perf, n, strict_fp32);
      break;
    }
    case Pass::bwd_data: {
      cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
      if (cudnnGetConvolutionBackwardDataAlgorithm_v7(h, d.w, d.y, d.conv, d.x, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT,
                                                      &n, perf) != CUDNN_STATUS_SUCCESS)
        n = 0;
      c = pick(h, d, pass, perf, n, strict_fp32);
      break;
    }
    case Pass::bwd_filter: {
      cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
      if (cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, d.x, d.y, d.conv, d.w, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT,
                                                        &n, perf) != CUDNN_STATUS_SUCCESS)
        n = 0;
      c = pick(h, d, pass, perf, n, strict_fp32);
      break;
    }
  }
  if (c.direct) {
    static const char* names[] = {"forward", "backward-data", "backward-filter"};
    std::fprintf(stderr,
                 "mo: conv2d: no deterministic cuDNN %s algorithm for x (%lld, %lld, %lld, %lld), w (%lld, %lld, %lld, "
                 "%lld), stride %d pad %d, %s; using the direct kernel\n",
                 names[static_cast<int>(pass)], (long long)g.B, (long long)g.H, (long long)g.W, (long long)g.Ci,
                 (long long)g.Co, (long long)g.Ci, (long long)g.kh, (long long)g.kw, g.stride, g.pad, dtype_name(dtype));
  }
  std::lock_guard<std::mutex> lock(mu);
  cache->emplace(key, c);
  return c;
}

cudnnDataType_t cudnn_dtype(DType t) { return t == DType::bf16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT; }

// Handle, descriptors and algorithm for one pass; null when cuDNN cannot run it (no deterministic
// algorithm, or cuDNN itself failed to set up: then a one-time note and the direct kernel).
struct Prepared {
  cudnnHandle_t h = nullptr;
  std::unique_ptr<ConvDescs> d;
  Choice c;
};
std::unique_ptr<Prepared> prepare(Pass pass, const Geo& g, DType dtype) {
  auto p = std::make_unique<Prepared>();
  try {
    p->h = cudnn_handle();
    p->d = std::make_unique<ConvDescs>(g, cudnn_dtype(dtype));
    p->c = choose(p->h, *p->d, pass, g, dtype);
  } catch (const Error& e) {
    static std::atomic<bool> noted{false};
    if (!noted.exchange(true)) std::fprintf(stderr, "mo: conv2d: cuDNN unavailable (%s); using the direct kernels\n", e.what());
    return nullptr;
  }
  if (p->c.direct) return nullptr;
  return p;
}

Tensor workspace(size_t bytes, Device dev) {
  return bytes > 0 ? Tensor::empty({static_cast<int64_t>(bytes)}, DType::u8, dev) : Tensor();
}
void* ws_ptr(const Tensor& t) { return t.defined() ? t.raw_data() : nullptr; }
#endif  // MO_WITH_CUDNN

// cuDNN's legacy API takes int sizes and at most 2^31 elements per tensor.
bool fits_cudnn(const Geo& g) {
  const int64_t lim = INT_MAX;
  return g.B * g.H * g.W * g.Ci < lim && g.M() * g.Co < lim && g.Co * g.Ci * g.kh * g.kw < lim;
}

}  // namespace

void cudnn_conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, int stride, int pad, const Tensor& y) {
  const Geo g = make_geo(x, w, stride, pad);
  MO_CHECK(x.is_contiguous() && w.is_contiguous() && y.is_contiguous() && y.numel() == g.M() * g.Co &&
               y.dtype() == x.dtype() && w.dtype() == x.dtype() && (!b.defined() || b.dtype() == x.dtype()),
           "cuda conv2d: x {}, w {}, y {} must be contiguous with matching dtypes", x.str(), w.str(), y.str());
  cu::float_dispatch("conv2d", x, [&](auto z) {
    using T = decltype(z);
    if (y.numel() == 0) return;
    Tensor wr = to_ohwi<T>(w, g);
#ifdef MO_WITH_CUDNN
    if (!force_direct() && fits_cudnn(g)) {
      if (auto p = prepare(Pass::fwd, g, x.dtype())) {
        const ConvDescs& d = *p->d;
        Tensor ws = workspace(p->c.workspace, x.device());
        const float one = 1.0f, zero = 0.0f;
        CUDNN_CHECK(cudnnConvolutionForward(p->h, &one, d.x, x.raw_data(), d.w, wr.raw_data(), d.conv,
                                            (cudnnConvolutionFwdAlgo_t)p->c.algo, ws_ptr(ws), p->c.workspace, &zero,
                                            d.y, y.raw_data()));
        if (b.defined()) {
          add_bias_kernel<T><<<cu::grid_1d(y.numel(), 256), 256, 0, stream()>>>(cu::ptr<T>(y), cu::ptr<const T>(b),
                                                                               g.M(), g.Co);
          CUDA_CHECK_LAUNCH();
        }
        return;
      }
    }
#endif
    direct_forward<T>(x, wr, b, y, g);
  });
}

void cudnn_conv2d_backward(const Tensor& dy, const Tensor& x, const Tensor& w, int stride, int pad, const Tensor& dx,
                           const Tensor& dw, const Tensor& db) {
  const Geo g = make_geo(x, w, stride, pad);
  MO_CHECK(dy.is_contiguous() && x.is_contiguous() && w.is_contiguous() && dy.numel() == g.M() * g.Co &&
               dy.dtype() == x.dtype() && w.dtype() == x.dtype() && dw.defined() && dw.shape() == w.shape() &&
               dw.is_contiguous() && dw.dtype() == w.dtype() &&
               (!dx.defined() || (dx.shape() == x.shape() && dx.is_contiguous() && dx.dtype() == x.dtype())),
           "cuda conv2d backward: dy {}, x {}, w {}, dx {}, dw {} must be contiguous with matching shapes and dtypes",
           dy.str(), x.str(), w.str(), dx.str(), dw.str());
  cu::float_dispatch("conv2d", x, [&](auto z) {
    using T = decltype(z);
    if (db.defined()) sum_rows(dy.view({g.M(), g.Co}), db);  // db = Σ_pixels dy
    if (g.M() == 0) {
      Tensor(dw).zero_();
      if (dx.defined()) Tensor(dx).zero_();
      return;
    }
    Tensor wr = to_ohwi<T>(w, g);
    Tensor dwr = Tensor::empty({g.Co, g.kh, g.kw, g.Ci}, w.dtype(), w.device());
    bool data_done = !dx.defined(), filter_done = false;
#ifdef MO_WITH_CUDNN
    if (!force_direct() && fits_cudnn(g)) {
      const float one = 1.0f, zero = 0.0f;
      if (!data_done) {
        if (auto p = prepare(Pass::bwd_data, g, x.dtype())) {
          const ConvDescs& d = *p->d;
          Tensor ws = workspace(p->c.workspace, x.device());
          CUDNN_CHECK(cudnnConvolutionBackwardData(p->h, &one, d.w, wr.raw_data(), d.y, dy.raw_data(), d.conv,
                                                   (cudnnConvolutionBwdDataAlgo_t)p->c.algo, ws_ptr(ws),
                                                   p->c.workspace, &zero, d.x, dx.raw_data()));
          data_done = true;
        }
      }
      if (auto p = prepare(Pass::bwd_filter, g, x.dtype())) {
        const ConvDescs& d = *p->d;
        Tensor ws = workspace(p->c.workspace, x.device());
        CUDNN_CHECK(cudnnConvolutionBackwardFilter(p->h, &one, d.x, x.raw_data(), d.y, dy.raw_data(), d.conv,
                                                   (cudnnConvolutionBwdFilterAlgo_t)p->c.algo, ws_ptr(ws),
                                                   p->c.workspace, &zero, d.w, dwr.raw_data()));
        filter_done = true;
      }
    }
#endif
    if (!data_done) direct_backward_data<T>(dy, wr, dx, g);
    if (!filter_done) direct_backward_filter<T>(dy, x, dwr, g);
    from_ohwi<T>(dwr, dw, g);
  });
}

}  // namespace mo::bench
