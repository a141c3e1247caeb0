// cross_entropy.cu: CUDA halves of the soft-target cross-entropy (see cross_entropy.h).
//
// forward: one 256-thread block per row b computes, in fp32, mx = max_j z, se = Σ e^{z−mx}, st = Σ t,
//   stz = Σ t·(z−mx) (fixed-order block reductions) and writes row_loss[b] = st·log(se) − stz; a second
//   single-block kernel adds the B row losses in a fixed order and divides by B. No atomics, so the
//   loss is bit-identical from run to run.
// backward: one block per row recomputes mx, se, st and writes dz = (e^{z−mx}/se·st − t)·dloss/B with
//   dloss read from the device (no host sync).
// Logits f32 or bf16; targets f32 or bf16 independently (mixup targets often stay f32). Rows of ~1000
// classes: the row fits the block's loop in 4 strided passes; the kernel is tiny next to the model.
#include "ops/loss/cross_entropy.h"

#include "ops/cuda_utils.cuh"

namespace mo::cuda {

namespace {

constexpr int kThreads = 256;

// mx, se, st (and stz when wanted) of one row; every thread gets the block-wide values.
template <typename TZ, typename TT>
__device__ void row_stats(const TZ* zr, const TT* tr, int64_t N, float* red, float& mx, float& se, float& st,
                          float* stz) {
  float m = -INFINITY;
  for (int64_t j = threadIdx.x; j < N; j += blockDim.x) m = fmaxf(m, cu::to_float(zr[j]));
  mx = cu::block_max(m, red);
  float a = 0.0f, b = 0.0f, c = 0.0f;
  for (int64_t j = threadIdx.x; j < N; j += blockDim.x) {
    const float d = cu::to_float(zr[j]) - mx, t = cu::to_float(tr[j]);
    a += expf(d);
    b += t;
    c += t * d;
  }
  se = cu::block_sum(a, red);
  st = cu::block_sum(b, red);
  if (stz != nullptr) *stz = cu::block_sum(c, red);
}

template <typename TZ, typename TT>
__global__ void ce_forward_rows_kernel(const TZ* z, const TT* t, int64_t N, float* row_loss) {
  __shared__ float red[33];
  const int64_t r = blockIdx.x;
  float mx, se, st, stz;
  row_stats(z + r * N, t + r * N, N, red, mx, se, st, &stz);
  if (threadIdx.x == 0) row_loss[r] = st * logf(se) - stz;
}

__global__ void ce_forward_final_kernel(const float* row_loss, int64_t B, float* loss) {
  __shared__ float red[33];
  float s = 0.0f;
  for (int64_t i = threadIdx.x; i < B; i += blockDim.x) s += row_loss[i];
  s = cu::block_sum(s, red);
  if (threadIdx.x == 0) loss[0] = s / static_cast<float>(B);
}

template <typename TZ, typename TT>
__global__ void ce_backward_rows_kernel(const TZ* z, const TT* t, const float* dloss, int64_t B, int64_t N, TZ* dz) {
  __shared__ float red[33];
  const int64_t r = blockIdx.x;
  const TZ* zr = z + r * N;
  const TT* tr = t + r * N;
  float mx, se, st;
  row_stats(zr, tr, N, red, mx, se, st, static_cast<float*>(nullptr));
  const float gs = dloss[0] / static_cast<float>(B);
  TZ* dr = dz + r * N;
  for (int64_t j = threadIdx.x; j < N; j += blockDim.x)
    dr[j] = cu::from_float<TZ>((expf(cu::to_float(zr[j]) - mx) / se * st - cu::to_float(tr[j])) * gs);
}

// Runs f(TZ{}, TT{}) for the four (logits, target) dtype pairs.
template <typename F>
void ce_dispatch(const Tensor& z, const Tensor& t, F&& f) {
  cu::float_dispatch("soft_target_cross_entropy", z, [&](auto zz) {
    cu::float_dispatch("soft_target_cross_entropy (target)", t, [&](auto tt) { f(zz, tt); });
  });
}

void check_inputs(const Tensor& z, const Tensor& t) {
  MO_CHECK(z.dim() == 2 && z.shape() == t.shape() && z.is_contiguous() && t.is_contiguous() && z.is_cuda() &&
               t.device() == z.device(),
           "soft_target_cross_entropy: CUDA kernel expects contiguous logits and target (B, N) on one device, got {} "
           "and {}",
           z.str(), t.str());
  MO_CHECK(z.size(1) > 0, "soft_target_cross_entropy: no classes in {}", z.str());
}

}  // namespace

void soft_target_ce_forward(const Tensor& logits, const Tensor& target, const Tensor& loss) {
  check_inputs(logits, target);
  MO_CHECK(loss.numel() == 1 && loss.dtype() == DType::f32 && loss.device() == logits.device(),
           "soft_target_cross_entropy: loss must be a float32 scalar on {}, got {}", logits.device().str(), loss.str());
  const int64_t B = logits.size(0), N = logits.size(1);
  if (B == 0) {  // mean over no rows, like the CPU's 0/0
    Tensor(loss).fill_(NAN);
    return;
  }
  MO_CHECK(B <= 2147483647, "soft_target_cross_entropy: {} rows is too many", B);
  Tensor row_loss = Tensor::empty({B}, DType::f32, logits.device());
  ce_dispatch(logits, target, [&](auto zz, auto tt) {
    using TZ = decltype(zz);
    using TT = decltype(tt);
    ce_forward_rows_kernel<TZ, TT><<<static_cast<unsigned>(B), kThreads, 0, stream()>>>(
        cu::ptr<const TZ>(logits), cu::ptr<const TT>(target), N, row_loss.data<float>());
    CUDA_CHECK_LAUNCH();
  });
  ce_forward_final_kernel<<<1, 1024, 0, stream()>>>(row_loss.data<float>(), B, loss.data<float>());
  CUDA_CHECK_LAUNCH();
}

void soft_target_ce_backward(const Tensor& logits, const Tensor& target, const Tensor& dloss, const Tensor& dlogits) {
  check_inputs(logits, target);
  MO_CHECK(dloss.numel() == 1 && dloss.dtype() == DType::f32 && dloss.device() == logits.device(),
           "soft_target_cross_entropy: dloss must be a float32 scalar on {}, got {}", logits.device().str(), dloss.str());
  MO_CHECK(dlogits.shape() == logits.shape() && dlogits.dtype() == logits.dtype() && dlogits.is_contiguous() &&
               dlogits.device() == logits.device(),
           "soft_target_cross_entropy: dlogits {} must match logits {}", dlogits.str(), logits.str());
  const int64_t B = logits.size(0), N = logits.size(1);
  if (B == 0) return;
  ce_dispatch(logits, target, [&](auto zz, auto tt) {
    using TZ = decltype(zz);
    using TT = decltype(tt);
    ce_backward_rows_kernel<TZ, TT><<<static_cast<unsigned>(B), kThreads, 0, stream()>>>(
        cu::ptr<const TZ>(logits), cu::ptr<const TT>(target), dloss.data<float>(), B, N, cu::ptr<TZ>(dlogits));
    CUDA_CHECK_LAUNCH();
  });
}

}  // namespace mo::cuda
