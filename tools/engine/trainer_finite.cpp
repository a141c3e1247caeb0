// trainer_finite.cpp: divergence detection. Each step's loss sum, a finiteness probe of its gradients
// and its gradient norm go to a device buffer (no host sync); flush_step_stats() reads it, adds the
// losses and norms to the window and epoch sums and finds the first non-finite step; a NaN/Inf ends the
// run on every rank with an error naming the step. first_non_finite() names a weight or moment that is
// not finite before a checkpoint is written.
#include <algorithm>
#include <cmath>

#include "ops/common.h"
#include "ops/linear/linear.h"  // cuda::sum_rows
#include "tools/engine/trainer.h"
#include "tools/engine/trainer_internal.h"

namespace mo::tools {

namespace detail {

// See trainer_internal.h.
Tensor finite_probe(const Tensor& flat) {
  MO_ASSERT(flat.dtype() == DType::f32 && flat.dim() == 1 && flat.is_contiguous());
  const int64_t n = flat.numel(), cols = 1024, rows = n / cols, tail = n - rows * cols;
  if (!flat.is_cuda()) {
    const float* p = flat.data<float>();
    double sq = 0;
#pragma omp parallel for reduction(+ : sq)
    for (int64_t i = 0; i < n; ++i) sq += static_cast<double>(p[i]) * p[i];
    return Tensor::full({1}, std::sqrt(sq));
  }
  Tensor partial = Tensor::empty({cols}, DType::f32, flat.device());
  Tensor sum = Tensor::empty({1}, DType::f32, flat.device()), rest = Tensor::empty({1}, DType::f32, flat.device());
  MO_CUDA_DISPATCH("finite_probe", {
    cuda::sum_rows(flat.as_strided({rows, cols}, {cols, 1}, flat.offset()), partial);
    cuda::sum_rows(partial.view({cols, 1}), sum);
    cuda::sum_rows(flat.as_strided({tail, 1}, {1, 1}, flat.offset() + rows * cols), rest);
  });
  sum.add_(rest);
  return sum;
}

}  // namespace detail

using detail::finite_probe;
using detail::kStatCols;

namespace {

// A non-finite step is reported across ranks as a code: 2 * step + (1 for the gradient) + 1; 0: none.
int64_t bad_code(int64_t step, bool gradient) { return 2 * step + (gradient ? 1 : 0) + 1; }

}  // namespace

int64_t Trainer::flush_step_stats() {
  if (stat_rows_ == 0) return 0;
  const std::vector<float> v = step_stats_.to_vector<float>();  // waits for the device: the one sync
  int64_t code = 0;
  for (int64_t i = 0; i < stat_rows_ && code == 0; ++i) {
    const auto at = static_cast<size_t>(kStatCols * i);
    const float loss = v[at], grad = v[at + 1], norm = v[at + 2];
    const int64_t step = stat_first_step_ + i + 1;
    if (!std::isfinite(loss)) code = bad_code(step, false);
    else if (!std::isfinite(grad)) code = bad_code(step, true);
    window_loss_sum_ += loss;
    epoch_loss_sum_ += loss;
    if (cfg_.optim.clip_grad > 0) {
      window_norm_sum_ += norm;
      epoch_norm_sum_ += norm;
      ++window_norm_count_;
      ++epoch_norm_count_;
    }
  }
  step_stats_.zero_();
  stat_first_step_ += stat_rows_;
  stat_rows_ = 0;
  return code;
}

void Trainer::fail_if_non_finite(const std::vector<int64_t>& codes, int64_t local_code) const {
  // codes[r]: rank r's code; the earliest step is reported.
  int64_t first = 0, first_rank = 0;
  for (size_t r = 0; r < codes.size(); ++r)
    if (codes[r] != 0 && (first == 0 || codes[r] < first)) first = codes[r], first_rank = static_cast<int64_t>(r);
  if (first == 0) return;
  if (local_code != 0) first = local_code, first_rank = pg_->rank();
  const int64_t step = (first - 1) / 2;
  const bool gradient = (first - 1) % 2 == 1;
  const std::string latest = pg_->is_main() && !ckpt_->list().empty() ? ckpt_->list().back() : "";
  MO_FAIL("training diverged: the {} of step {} (epoch {}) {} NaN or Inf{}; stopping without saving the weights "
          "(they are not finite). The checkpoints already written are kept{}. Lower optim.lr (now {}) or look "
          "for bad input in the data", gradient ? "gradient" : "loss", step, epoch_, gradient ? "holds" : "is",
          pg_->world_size() > 1 ? fmt::format(" on rank {}", first_rank) : "",
          latest.empty() ? "" : " (the newest: " + latest + ")", cfg_.optim.lr);
}

void Trainer::check_finite() {
  const int64_t code = flush_step_stats();
  std::vector<int64_t> codes(static_cast<size_t>(pg_->world_size()), 0);
  codes[static_cast<size_t>(pg_->rank())] = code;
  if (pg_->world_size() > 1) codes = pg_->all_reduce_sum(codes);
  fail_if_non_finite(codes, code);
}

std::string Trainer::first_non_finite() const {
  std::vector<std::pair<const char*, const Tensor*>> parts = {
      {"", &opt_->master()}, {".exp_avg", &opt_->exp_avg()}, {".exp_avg_sq", &opt_->exp_avg_sq()}};
  if (ema_) parts.emplace_back(" (model EMA)", &ema_->flat());
  for (const auto& [suffix, flat] : parts) {
    if (std::isfinite(finite_probe(*flat).item())) continue;
    for (const auto& slot : opt_->slots()) {  // which parameter (only on this failure path)
      std::vector<float> v = opt_->export_slot(*flat, slot).to(Device::cpu()).to_vector<float>();
      if (std::any_of(v.begin(), v.end(), [](float x) { return !std::isfinite(x); })) return slot.name + suffix;
    }
    return std::string("(all)") + suffix;  // finite values whose sum overflows
  }
  return "";
}

}  // namespace mo::tools
