// evaluate.cpp: eval loop with exact distributed counts.
#include "tools/engine/evaluate.h"

#include <cmath>

#include "autograd/graph.h"
#include "dist/shard.h"
#include "ops/loss/cross_entropy.h"
#include "ops/shape/shape.h"

namespace mo::tools {
namespace {

// The first `rows` rows of a contiguous tensor (B, ...).
Tensor first_rows(const Tensor& t, int64_t rows) {
  Tensor c = t.contiguous();
  Shape shape = c.shape();
  shape[0] = rows;
  return c.as_strided(shape, contiguous_strides(shape), c.offset());
}

// Top-1 and top-5 hits of logits (B, N) against labels (B), a row with any NaN/Inf counting as a miss;
// adds them and the number of such rows to `c`.
void count_hits(const Tensor& logits, const Tensor& labels, EvalResult& c) {
  const int64_t B = logits.size(0), N = logits.size(1);
  std::vector<float> z = logits.to_vector<float>();
  std::vector<int64_t> y = labels.to_vector<int64_t>();
  std::vector<float> kept_z;
  std::vector<int64_t> kept_y;
  for (int64_t b = 0; b < B; ++b) {
    const float* row = z.data() + b * N;
    bool finite = true;
    for (int64_t j = 0; j < N; ++j) finite = finite && std::isfinite(row[j]);
    if (!finite) {
      ++c.non_finite;
      continue;
    }
    kept_z.insert(kept_z.end(), row, row + N);
    kept_y.push_back(y[static_cast<size_t>(b)]);
  }
  const auto rows = static_cast<int64_t>(kept_y.size());
  if (rows == 0) return;
  Tensor zt = Tensor::from_vector(kept_z, {rows, N}), yt = Tensor::from_vector(kept_y, {rows});
  c.top1 += topk_correct(zt, yt, 1);
  c.top5 += topk_correct(zt, yt, 5);
}

}  // namespace

EvalResult evaluate(nn::Classifier& model, data::Loader& loader, dist::ProcessGroup& pg,
                    const std::function<void(int64_t, int64_t)>& on_batch, const std::atomic<bool>* stop) {
  const bool was_training = model.is_training();
  model.eval();
  NoGradGuard no_grad;
  const int64_t n = loader.dataset().size(), per_rank = loader.samples_per_rank();
  const int64_t total = loader.batches_per_epoch();
  const int rank = pg.rank(), world = pg.world_size();
  // The eval sampler does not shuffle and pads rank r's list to per_rank samples with repeats: its
  // j-th sample sits at position j * world + r, a repeat when that is >= n (only at the end of the list).
  int64_t real = 0;
  while (real < per_rank && !dist::is_padding(dist::shard_position(real, rank, world), n)) ++real;

  EvalResult local;
  const int64_t bad_before = loader.bad_samples();
  loader.start_epoch(0, 0);
  data::Batch b;
  int64_t seen = 0, done = 0;
  bool interrupted = false;
  for (;;) {
    if (done < total && stop && stop->load()) {  // a stop after the last batch interrupts nothing
      interrupted = true;
      break;
    }
    if (!loader.next(b)) break;
    const int64_t rows = std::min<int64_t>(b.images.size(0), real - seen);
    seen += b.images.size(0);
    if (rows > 0) {
      Tensor logits = model.forward_nhwc(b.images);
      Tensor targets = b.targets, labels = b.labels;
      if (rows < logits.size(0)) {
        logits = first_rows(logits, rows);
        targets = first_rows(targets, rows);
        labels = first_rows(labels, rows);
      }
      if (targets.size(1) < logits.size(1))  // a folder with fewer classes than the model has outputs (its class
        targets = concat_last({targets, Tensor::zeros({targets.size(0), logits.size(1) - targets.size(1)},  // i is
                                                      targets.dtype(), targets.device())});  // output i)
      local.loss_sum += soft_target_cross_entropy(logits, targets).item() * static_cast<double>(rows);
      count_hits(logits, labels, local);
      local.samples += rows;
    }
    ++done;
    if (on_batch) on_batch(done, total);
  }
  model.train(was_training);
  EvalResult r;
  static_cast<dist::EvalCounts&>(r) = dist::all_reduce_counts(pg, local);
  const std::vector<int64_t> extra = pg.all_reduce_sum(
      std::vector<int64_t>{local.non_finite, loader.bad_samples() - bad_before, interrupted ? 1 : 0});
  r.non_finite = extra[0];
  r.bad_images = extra[1];
  r.interrupted = extra[2] > 0;
  return r;
}

}  // namespace mo::tools
