// evaluate.cpp: eval loop with exact distributed counts.
#include "tools/common/evaluate.h"

#include "autograd/graph.h"
#include "dist/shard.h"
#include "ops/loss/cross_entropy.h"

namespace mo::tools {
namespace {

// The first `rows` rows of a contiguous tensor (B, ...).
Tensor first_rows(const Tensor& t, int64_t rows) {
  Tensor c = t.contiguous();
  Shape shape = c.shape();
  shape[0] = rows;
  return c.as_strided(shape, contiguous_strides(shape), c.offset());
}

}  // namespace

dist::EvalCounts evaluate(nn::MambaOut& model, data::Loader& loader, dist::ProcessGroup& pg,
                          const std::function<void(int64_t, int64_t)>& on_batch) {
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

  dist::EvalCounts local;
  loader.start_epoch(0, 0);
  data::Batch b;
  int64_t seen = 0, done = 0;
  while (loader.next(b)) {
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
      local.loss_sum += soft_target_cross_entropy(logits, targets).item() * static_cast<double>(rows);
      local.top1 += topk_correct(logits, labels, 1);
      local.top5 += topk_correct(logits, labels, 5);
      local.samples += rows;
    }
    if (on_batch) on_batch(++done, total);
  }
  model.train(was_training);
  return dist::all_reduce_counts(pg, local);
}

}  // namespace mo::tools
