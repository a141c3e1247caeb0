// linear.cu: CUDA halves of linear/matmul (see linear.h).
//
// gemm: row-major C[M,N] = alpha·op(A)·op(B) + beta·C (+ bias[N]) through cuBLASLt. cuBLASLt is
//   column-major, so we compute Cᵀ (N×M, ld N) = op(B)ᵀ·op(A)ᵀ: the row-major buffers of B and A are
//   already the column-major transposes, so no data moves. Data f32 or bf16, compute fp32
//   (CUBLAS_COMPUTE_32F; CUBLAS_COMPUTE_32F_FAST_TF32 for f32 only when MO_ALLOW_TF32=1). The bias is
//   fused through the BIAS epilogue (a vector over the rows of Cᵀ = the columns of C) when its pointer
//   is 16-byte aligned; otherwise a small kernel writes beta·C + bias first and the product adds to it.
//   One cuBLASLt handle per (thread, device); a 32 MiB workspace per (device, stream) taken once from
//   the caching allocator; the heuristic's algorithm is cached per (shape, ops, dtype, alignments), so
//   a given shape always runs the same algorithm (bit-identical results from run to run).
//   If cuBLASLt offers no algorithm for a shape/alignment, a plain tiled kernel (fp32, fixed order) runs
//   instead and a one-line note goes to stderr.
//   With bias_grad (weight gradients, A = dy transposed), the BGRADB epilogue writes the bias gradient
//   Σ_rows dy in the same pass: the separate column-sum pass over dy disappears.
// sum_rows: out[N] = Σ_i x[i, :] (bias gradient) with cu::column_sum: a (32 × 8) block per
//   32 columns × row chunk, fp32 partials reduced in a fixed order by a second pass. No atomics.
#include "ops/linear/linear.h"

#include <cublasLt.h>

#include <cstdio>
#include <map>
#include <mutex>
#include <tuple>

#include "ops/cuda_utils.cuh"

namespace mo::cuda {

namespace {

constexpr size_t kWorkspaceBytes = 32u << 20;  // cuBLAS' recommendation for Hopper

cublasLtHandle_t lt_handle() {
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  thread_local std::map<int, cublasLtHandle_t> handles;  // never destroyed: may outlive the context
  auto it = handles.find(dev);
  if (it != handles.end()) return it->second;
  cublasLtHandle_t h = nullptr;
  CUBLAS_CHECK(cublasLtCreate(&h));
  handles[dev] = h;
  return h;
}

// The workspace of (device, stream): a long-lived tensor from the caching allocator.
void* lt_workspace(int dev) {
  static std::mutex mu;
  static auto* spaces = new std::map<std::pair<int, cudaStream_t>, Tensor>();  // intentionally leaked
  std::lock_guard<std::mutex> lock(mu);
  auto key = std::make_pair(dev, stream());
  auto it = spaces->find(key);
  if (it == spaces->end())
    it = spaces->emplace(key, Tensor::empty({static_cast<int64_t>(kWorkspaceBytes)}, DType::u8, Device::cuda(dev))).first;
  return it->second.raw_data();
}

uint32_t alignment_of(const void* p) {  // largest power of two dividing the address, at most 256
  uintptr_t a = reinterpret_cast<uintptr_t>(p);
  uint32_t al = 256;
  while (al > 1 && (a % al) != 0) al >>= 1;
  return al;
}

// RAII wrappers so a throwing check never leaks a descriptor.
struct MatmulDesc {
  cublasLtMatmulDesc_t d = nullptr;
  ~MatmulDesc() {
    if (d) cublasLtMatmulDescDestroy(d);
  }
};
struct Layout {
  cublasLtMatrixLayout_t l = nullptr;
  ~Layout() {
    if (l) cublasLtMatrixLayoutDestroy(l);
  }
};
struct Preference {
  cublasLtMatmulPreference_t p = nullptr;
  ~Preference() {
    if (p) cublasLtMatmulPreferenceDestroy(p);
  }
};

// (device, dtype, compute, ta, tb, M, N, K, epilogue, beta != 0, alignments A/B/D/C)
using AlgoKey =
    std::tuple<int, int, int, bool, bool, int64_t, int64_t, int64_t, int, bool, uint32_t, uint32_t, uint32_t, uint32_t>;

// C[i, j] = (beta != 0 ? beta·C[i, j] : 0) + bias[j]: used when the bias cannot go through the epilogue
// (misaligned pointer) or K = 0. Same expression as the CPU path in linear.cpp.
template <typename T>
__global__ void bias_prefill_kernel(T* C, const T* bias, int64_t M, int64_t N, float beta) {
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < M * N;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float base = beta != 0.0f ? beta * cu::to_float(C[t]) : 0.0f;
    float b = bias != nullptr ? cu::to_float(bias[t % N]) : 0.0f;
    C[t] = cu::from_float<T>(base + b);
  }
}

template <typename T>
void launch_prefill(const Tensor& C, const Tensor& bias, int64_t M, int64_t N, float beta) {
  bias_prefill_kernel<T><<<cu::grid_1d(M * N, 256), 256, 0, stream()>>>(
      cu::ptr<T>(C), bias.defined() ? cu::ptr<const T>(bias) : nullptr, M, N, beta);
  CUDA_CHECK_LAUNCH();
}

// Fallback when cuBLASLt offers no algorithm (odd alignments or leading dimensions): a plain 16×16
// shared-memory tiled product, fp32 accumulation in a fixed order. C = alpha·op(A)·op(B) + beta·C (+ bias).
constexpr int kTile = 16;
template <typename T>
__global__ void gemm_fallback_kernel(const T* A, bool ta, const T* B, bool tb, T* C, int64_t M, int64_t N, int64_t K,
                                     float alpha, float beta, const T* bias) {
  __shared__ float As[kTile][kTile + 1], Bs[kTile][kTile + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t col = static_cast<int64_t>(blockIdx.x) * kTile + tx;
  for (int64_t by = blockIdx.y; by * kTile < M; by += gridDim.y) {  // uniform per block
    const int64_t row = by * kTile + ty;
    float acc = 0.0f;
    for (int64_t k0 = 0; k0 < K; k0 += kTile) {
      const int64_t ka = k0 + tx, kb = k0 + ty;
      As[ty][tx] = row < M && ka < K ? cu::to_float(ta ? A[ka * M + row] : A[row * K + ka]) : 0.0f;
      Bs[ty][tx] = kb < K && col < N ? cu::to_float(tb ? B[col * K + kb] : B[kb * N + col]) : 0.0f;
      __syncthreads();
#pragma unroll
      for (int k = 0; k < kTile; ++k) acc += As[ty][k] * Bs[k][tx];
      __syncthreads();
    }
    if (row < M && col < N) {
      float c = alpha * acc;
      if (beta != 0.0f) c += beta * cu::to_float(C[row * N + col]);
      if (bias != nullptr) c += cu::to_float(bias[col]);
      C[row * N + col] = cu::from_float<T>(c);
    }
  }
}

template <typename T>
void launch_gemm_fallback(const Tensor& A, bool ta, const Tensor& B, bool tb, const Tensor& C, int64_t M, int64_t N,
                          int64_t K, float alpha, float beta, const Tensor& bias) {
  const int64_t gx = (N + kTile - 1) / kTile, gy = std::min<int64_t>((M + kTile - 1) / kTile, 65535);
  MO_CHECK(gx <= 2147483647, "linear: N = {} is too large", N);
  gemm_fallback_kernel<T><<<dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy)), dim3(kTile, kTile), 0,
                            stream()>>>(cu::ptr<const T>(A), ta, cu::ptr<const T>(B), tb, cu::ptr<T>(C), M, N, K, alpha,
                                        beta, bias.defined() ? cu::ptr<const T>(bias) : nullptr);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void gemm(const Tensor& A, bool transa, const Tensor& B, bool transb, const Tensor& C, float alpha, float beta,
          const Tensor& bias, const Tensor& bias_grad, const Tensor& addend) {
  MO_CHECK(A.dim() == 2 && B.dim() == 2 && C.dim() == 2, "cuda::gemm: expected 2-D A, B, C, got {}, {}, {}", A.str(),
           B.str(), C.str());
  MO_CHECK(A.is_contiguous() && B.is_contiguous() && C.is_contiguous(), "cuda::gemm: A {}, B {}, C {} must be contiguous",
           A.str(), B.str(), C.str());
  MO_CHECK(A.dtype() == C.dtype() && B.dtype() == C.dtype() && (!bias.defined() || bias.dtype() == C.dtype()),
           "cuda::gemm: dtypes differ: A {}, B {}, C {}, bias {}", A.str(), B.str(), C.str(), bias.str());
  MO_CHECK(A.is_cuda() && B.is_cuda() && C.is_cuda() && (!bias.defined() || bias.is_cuda()),
           "cuda::gemm: all tensors must be on CUDA: A {}, B {}, C {}", A.str(), B.str(), C.str());
  const int64_t M = C.size(0), N = C.size(1), K = transa ? A.size(0) : A.size(1);
  MO_CHECK((transa ? A.size(1) : A.size(0)) == M && (transb ? B.size(1) : B.size(0)) == K &&
               (transb ? B.size(0) : B.size(1)) == N,
           "cuda::gemm: shapes do not match: A {}{}, B {}{}, C {}", A.str(), transa ? "ᵀ" : "", B.str(),
           transb ? "ᵀ" : "", C.str());
  MO_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == N && bias.is_contiguous()),
           "cuda::gemm: bias {} must be contiguous ({})", bias.str(), N);
  cudaDataType_t dt;
  switch (C.dtype()) {
    case DType::f32: dt = CUDA_R_32F; break;
    case DType::bf16: dt = CUDA_R_16BF; break;
    default: MO_FAIL("linear: CUDA matrix products take float32 or bfloat16, got {}", C.str());
  }
  if (M == 0 || N == 0) return;
  // C = alpha·A·B (+ bias) + addend: cuBLASLt reads the addend as its C operand (β = 1) and writes our C as
  // its D, so a residual add costs no pass of its own. Paths that cannot (bias pre-fill, no algorithm) copy
  // the addend into C first and accumulate onto it.
  const void* c_in = C.raw_data();
  if (addend.defined()) {
    MO_CHECK(beta == 0.0f && !bias_grad.defined() && addend.shape() == C.shape() && addend.is_contiguous() &&
                 addend.dtype() == C.dtype() && addend.device() == C.device() && addend.raw_data() != C.raw_data(),
             "cuda::gemm: addend {} must be a contiguous tensor like C {}, apart from it, with beta 0", addend.str(),
             C.str());
    if ((bias.defined() && !cu::aligned16(bias.raw_data())) || K == 0) {
      CUDA_CHECK(cudaMemcpyAsync(C.raw_data(), addend.raw_data(), C.nbytes(), cudaMemcpyDeviceToDevice, stream()));
      gemm(A, transa, B, transb, C, alpha, 1.0f, bias);
      return;
    }
    c_in = addend.raw_data();
    beta = 1.0f;
  }
  // bias_grad[M] = Σ_k Aᵀ[:, k] (the column sums of A's buffer [K, M]) through the BGRADB epilogue; where
  // cuBLASLt has no such algorithm (or the vector is misaligned) the product runs plain and sum_rows follows.
  const bool want_bgrad = bias_grad.defined();
  if (want_bgrad) {
    MO_CHECK(transa && !bias.defined() && bias_grad.dim() == 1 && bias_grad.size(0) == M && bias_grad.is_contiguous() &&
                 bias_grad.dtype() == C.dtype() && bias_grad.device() == C.device(),
             "cuda::gemm: bias_grad {} needs transa, no bias and a contiguous ({}) vector like C {}", bias_grad.str(), M,
             C.str());
    // Only where every dimension is a multiple of 8: with BGRADB on mambaout_base's odd widths
    // (341/682/1365) its training step fell from 913 to 305 images/s (docs/optimization_notes.md).
    if (!cu::aligned16(bias_grad.raw_data()) || A.size(0) == 0 || M % 8 != 0 || N % 8 != 0 || K % 8 != 0) {
      gemm(A, transa, B, transb, C, alpha, beta, bias, Tensor());
      sum_rows(A, bias_grad);
      return;
    }
  }

  // Bias through the epilogue only when 16-byte aligned (cuBLASLt's requirement for vector loads).
  const bool epi_bias = bias.defined() && cu::aligned16(bias.raw_data()) && K > 0;
  if ((bias.defined() && !epi_bias) || K == 0) {
    cu::float_dispatch("linear", C, [&](auto z) { launch_prefill<decltype(z)>(C, bias, M, N, beta); });
    if (K == 0) return;  // C = beta·C + bias already
    beta = 1.0f;
  }

  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  const bool f32 = C.dtype() == DType::f32;
  const cublasComputeType_t compute = f32 && cu::allow_tf32() ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;

  // Column-major view: D(N×M) = op_a(Bbuf) · op_b(Abuf), see the top comment.
  const cublasOperation_t op_a = transb ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = transa ? CUBLAS_OP_T : CUBLAS_OP_N;
  MatmulDesc desc;
  CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc.d, compute, CUDA_R_32F));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc.d, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof(op_a)));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc.d, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof(op_b)));
  const cublasLtEpilogue_t epi =
      want_bgrad ? CUBLASLT_EPILOGUE_BGRADB : epi_bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc.d, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
  if (epi_bias || want_bgrad) {
    const void* bp = want_bgrad ? bias_grad.raw_data() : bias.raw_data();
    const int32_t bt = dt;  // bias in the data type (fp32 for f32 data, bf16 for bf16 data)
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc.d, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bp, sizeof(bp)));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc.d, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof(bt)));
  }
  Layout la, lb, lc;
  if (transb) CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&la.l, dt, K, N, K));  // B stored [N,K]
  else CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&la.l, dt, N, K, N));         // B stored [K,N]
  if (transa) CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lb.l, dt, M, K, M));  // A stored [K,M]
  else CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lb.l, dt, K, M, K));         // A stored [M,K]
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lc.l, dt, N, M, N));

  const uint32_t al_a = alignment_of(B.raw_data()), al_b = alignment_of(A.raw_data()), al_c = alignment_of(C.raw_data());
  const uint32_t al_cin = alignment_of(c_in);
  const AlgoKey key{dev, static_cast<int>(dt), static_cast<int>(compute), transa, transb, M, N, K, static_cast<int>(epi),
                    beta != 0.0f, al_a, al_b, al_c, al_cin};
  // The cached choice: an algorithm, or none (use the fallback kernel).
  struct Choice {
    bool have = false;
    cublasLtMatmulAlgo_t algo;
  };
  static std::mutex cache_mu;
  static auto* cache = new std::map<AlgoKey, Choice>();  // intentionally leaked
  cublasLtHandle_t handle = lt_handle();
  Choice choice;
  bool found = false;
  {
    std::lock_guard<std::mutex> lock(cache_mu);
    auto it = cache->find(key);
    if (it != cache->end()) {
      choice = it->second;
      found = true;
    }
  }
  if (!found) {
    Preference pref;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref.p));
    const uint64_t ws_bytes = kWorkspaceBytes;
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.p, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes,
                                                      sizeof(ws_bytes)));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.p, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a,
                                                      sizeof(al_a)));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.p, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b,
                                                      sizeof(al_b)));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.p, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_cin,
                                                      sizeof(al_cin)));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.p, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_c,
                                                      sizeof(al_c)));

    cublasLtMatmulHeuristicResult_t res{};
    int returned = 0;
    const cublasStatus_t st =
        cublasLtMatmulAlgoGetHeuristic(handle, desc.d, la.l, lb.l, lc.l, lc.l, pref.p, 1, &res, &returned);
    if (st != CUBLAS_STATUS_NOT_SUPPORTED) CUBLAS_CHECK(st);
    if (st == CUBLAS_STATUS_SUCCESS && returned > 0 && res.state == CUBLAS_STATUS_SUCCESS) {
      choice.have = true;
      choice.algo = res.algo;
    } else if (!want_bgrad) {
      std::fprintf(stderr,
                   "mo: linear: cuBLASLt has no algorithm for C[%lld, %lld] = A%s · B%s (%s, K %lld, alignments %u/%u/%u); "
                   "using the fallback kernel\n",
                   (long long)M, (long long)N, transa ? "ᵀ" : "", transb ? "ᵀ" : "", dtype_name(C.dtype()),
                   (long long)K, al_b, al_a, al_c);
    }
    std::lock_guard<std::mutex> lock(cache_mu);
    cache->emplace(key, choice);
  }
  if (!choice.have && want_bgrad) {  // no fused algorithm: the plain product, then the column sums
    gemm(A, transa, B, transb, C, alpha, beta, bias, Tensor());
    sum_rows(A, bias_grad);
    return;
  }
  if (!choice.have && addend.defined()) {  // the fallback kernel accumulates onto C: start from the addend
    CUDA_CHECK(cudaMemcpyAsync(C.raw_data(), addend.raw_data(), C.nbytes(), cudaMemcpyDeviceToDevice, stream()));
  }
  if (!choice.have) {
    const Tensor no_bias;  // any bias went through the pre-fill above or rides in the epilogue flag
    cu::float_dispatch("linear", C, [&](auto z) {
      launch_gemm_fallback<decltype(z)>(A, transa, B, transb, C, M, N, K, alpha, beta, epi_bias ? bias : no_bias);
    });
    return;
  }
  void* ws = lt_workspace(dev);
  CUBLAS_CHECK(cublasLtMatmul(handle, desc.d, &alpha, B.raw_data(), la.l, A.raw_data(), lb.l, &beta, c_in, lc.l,
                              C.raw_data(), lc.l, &choice.algo, ws, kWorkspaceBytes, stream()));
}

void sum_rows(const Tensor& x, const Tensor& out) {
  MO_CHECK(x.dim() == 2 && x.is_contiguous() && out.is_contiguous() && out.numel() == x.size(1) &&
               out.dtype() == x.dtype() && x.is_cuda() && out.device() == x.device(),
           "cuda::sum_rows: x {} must be contiguous (M, N) and out {} (N) of the same dtype/device", x.str(), out.str());
  const int64_t M = x.size(0), N = x.size(1);
  cu::float_dispatch("linear", x, [&](auto z) {
    using T = decltype(z);
    if (M == 0) {
      CUDA_CHECK(cudaMemsetAsync(out.raw_data(), 0, out.nbytes(), stream()));
      return;
    }
    cu::column_sum(cu::ColumnLoad<T>{cu::ptr<const T>(x), M, N}, 1, M, N, 1.0f, cu::ptr<T>(out), x.device());
  });
}

}  // namespace mo::cuda
