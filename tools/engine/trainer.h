// trainer.h: the training loop of mo_train. One Trainer = one run of a recipe on this process's rank:
//   for each epoch, for each optimizer step:  lr from the schedule;  accumulation micro-batches of
//   forward (channels-last batches from the loader) -> soft-target cross-entropy -> backward (gradients
//   add up in the optimizer's fp32 arena; with several ranks the last micro-batch all-reduces them in
//   buckets);  AdamW step with gradients scaled by 1/accumulation;  logs;  checkpoints.
//   At epoch ends: evaluation, summary.csv, TensorBoard, a checkpoint (the last K and the best kept).
// Global batch = world size x batch_size x accumulation (the accumulation follows from the other two).
// Device-agnostic: tensors live on the rank's device (a GPU, or the CPU where there is none); bf16
// compute on the GPU, fp32 on the CPU. Rank 0 alone prints, writes logs and checkpoints.
// Resuming restores weights, optimizer moments and step, the epoch and position in it (the loader's
// draws are keyed by (seed, epoch, batch) and drop path by (seed, micro-step)), so a resumed run
// continues with the same bits as one that never stopped.
// Divergence: each step's loss and a finiteness probe of its gradients go to a small device buffer (no
// host sync); the buffer is read where the loss is logged anyway, before every checkpoint and when
// full, and a NaN/Inf ends the run on all ranks with an error naming the step. A checkpoint is written
// only from finite weights and moments, so what was saved before a divergence stays the newest.
// Unreadable images (the loader draws stand-ins) are totalled per epoch in the log and summary.csv; an
// evaluation that needed stand-ins is refused, as mo_validate refuses it (the epoch is saved first).
// Options: a model EMA (model_ema, tools/engine/model_ema.h) updated after every step and evaluated
// beside the model; clipping by global gradient norm (optim.clip_grad: the norm of the step's averaged
// gradient, computed after the all-reduce, once per step, and applied on the device without a sync);
// `train.output: auto` (tools/engine/run_folder.h). The run folder gets log.txt (what rank 0 printed),
// summary.csv and curves.svg (tools/engine/curves.h) at every epoch end. A mid-epoch checkpoint carries
// the epoch's loss (and norm) sums, so the epoch's summary.csv row is the same as without the stop.
// The parts: trainer.cpp (setup, the loop, one step), trainer_checkpoint.cpp (resume, save),
// trainer_finite.cpp (the step buffer, divergence), trainer_epoch.cpp (evaluation and logs at epoch ends).
#pragma once
#include <cstdio>
#include <memory>
#include <optional>
#include <string>

#include "autograd/cuda_allocator.h"
#include "data/loader.h"
#include "dist/metrics.h"
#include "dist/process_group.h"
#include "nn/adamw.h"
#include "nn/mambaout.h"
#include "tools/engine/checkpoint.h"
#include "tools/engine/evaluate.h"
#include "tools/engine/model_ema.h"
#include "tools/engine/progress.h"
#include "tools/engine/tensorboard_writer.h"
#include "tools/engine/train_config.h"

namespace mo::dist {
class DataParallel;
}

namespace mo::tools {

struct TrainResult {
  int64_t global_step = 0;
  int64_t epochs_done = 0;  // completed epochs
  bool stopped = false;      // ended before the schedule's end (train.max_steps or a stop request)
  bool interrupted = false;  // by request_stop()
  std::optional<EvalResult> last_eval;
  std::optional<EvalResult> last_eval_ema;  // with model_ema
  double last_train_loss = 0;  // mean over the last completed epoch (all ranks)
  double best_top1 = -1;
  std::string last_checkpoint;
  double train_seconds = 0;
};

class Trainer {
 public:
  // `pg`: the rank's process group (null: dist::init() for this process). Messages go to `out`.
  Trainer(const TrainConfig& cfg, std::shared_ptr<dist::ProcessGroup> pg = nullptr, std::FILE* out = stdout);
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  TrainResult fit();

  // A stop request (e.g. from SIGINT/SIGTERM): the run saves a checkpoint after the current step and
  // fit() returns. Async-signal-safe.
  static void request_stop();

  nn::Classifier& model() { return *model_; }
  const nn::AdamW& optimizer() const { return *opt_; }
  const ModelEma* ema() const { return ema_.get(); }
  const dist::DataParallel* data_parallel() const { return ddp_.get(); }  // null with one rank
  const std::string& output_dir() const { return cfg_.train.output; }
  int64_t accumulation() const { return accum_; }
  int64_t steps_per_epoch() const { return steps_per_epoch_; }
  int64_t global_step() const { return global_step_; }
  bool is_main() const { return pg_->is_main(); }
  Device device() const { return dev_; }
  DType compute_dtype() const { return compute_; }

 private:
  void build();             // the constructor's work once the run's log is open
  TrainResult fit_steps();  // fit()'s work
  template <typename F>
  auto logged(F f) -> decltype(f());
  void resume();
  void apply_checkpoint(const CheckpointState& s, const std::string& path);
  CheckpointState make_state(std::optional<double> metric) const;
  std::string save(std::optional<double> metric, bool is_best);
  void say(const std::string& msg);
  void log_input(int64_t epoch, double train_time);
  void train_step(int64_t epoch, int64_t k);
  void end_of_epoch(int64_t epoch, TrainResult& r);
  std::optional<EvalResult> evaluate_ema(int64_t epoch, EpochSummary& row);  // the EMA's columns of `row`, a log line
  // Reads the step buffer (one sync): adds the losses to the window and epoch sums and returns the
  // code of the first non-finite step on this rank (see check_finite), 0 when all are finite.
  int64_t flush_step_stats();
  // Throws on every rank when any rank's code (one per rank, summed over ranks in `codes`) is set.
  void fail_if_non_finite(const std::vector<int64_t>& codes, int64_t local_code) const;
  // flush_step_stats() on every rank and the verdict (one all-reduce with several ranks).
  void check_finite();
  // The name of the first weight or moment ("<param>.exp_avg") holding NaN/Inf; "" when all are finite.
  std::string first_non_finite() const;

  TrainConfig cfg_;
  std::shared_ptr<dist::ProcessGroup> pg_;
  std::FILE* out_;
  Device dev_ = Device::cpu();
  std::unique_ptr<CudaOwnStream> stream_;  // a GPU run's compute stream (autograd/cuda_allocator.h)
  std::unique_ptr<CudaRunAhead> pace_;     // train.run_ahead: marked after each optimizer step
  DType compute_ = DType::f32;
  LrSchedule sched_;
  int64_t accum_ = 1, steps_per_epoch_ = 0, total_epochs_ = 0, total_steps_ = 0;
  std::unique_ptr<data::Loader> train_, eval_;
  std::unique_ptr<nn::Classifier> model_;
  std::unique_ptr<nn::AdamW> opt_;
  std::unique_ptr<ModelEma> ema_;
  std::unique_ptr<dist::DataParallel> ddp_;
  std::unique_ptr<CheckpointManager> ckpt_;
  std::unique_ptr<TensorBoardWriter> tb_;
  std::unique_ptr<Progress> progress_;
  std::string config_yaml_;
  std::vector<std::string> class_names_;

  // Position: the next step is step `step_in_epoch_` of `epoch_`; `global_step_` steps done in all.
  int64_t epoch_ = 0, step_in_epoch_ = 0, global_step_ = 0;
  double best_top1_ = -1;
  int64_t best_epoch_ = -1;
  double lr_ = 0;

  // Per-step statistics on the device, (kStatRows, 3): the sum of the step's micro-batch losses, the
  // gradients' finiteness probe and the global gradient norm (with optim.clip_grad); `stat_rows_` rows hold
  // steps stat_first_step_ + 1 ... (1-based steps).
  Tensor step_stats_;
  int64_t stat_rows_ = 0, stat_first_step_ = 0;
  // Loss bookkeeping on the host: sums of per-micro-batch losses since the last log / this epoch.
  double window_loss_sum_ = 0, epoch_loss_sum_ = 0;
  int64_t window_micro_ = 0, epoch_micro_ = 0, window_steps_ = 0;
  double window_norm_sum_ = 0, epoch_norm_sum_ = 0;  // gradient norms (optim.clip_grad) since the last log / epoch
  int64_t window_norm_count_ = 0, epoch_norm_count_ = 0;
  double epoch_start_ = 0;     // when this run started training the current epoch
  data::LoaderStats epoch_input_start_;  // the training loader's counters then (the epoch's input line)
  int64_t epoch_steps_run_ = 0;  // steps of the current epoch this run trained
  int64_t epoch_bad_start_ = 0;  // the training loader's bad_samples() when the epoch started
  double last_loss_ = 0, window_start_ = 0, run_start_ = 0, step_time_ema_ = 0, last_step_end_ = 0;
  int64_t steps_this_run_ = 0;
};

}  // namespace mo::tools
