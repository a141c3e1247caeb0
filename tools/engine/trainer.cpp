// trainer.cpp: the Trainer's setup (device, loaders, model, optimizer, EMA, run folder, resume) and its
// loop: fit() runs the epochs and steps, train_step() one optimizer step of accumulated micro-batches
// (see trainer.h). The other parts: trainer_checkpoint.cpp (resume and save), trainer_finite.cpp (the
// step buffer and the divergence checks), trainer_epoch.cpp (evaluation and the logs at an epoch's end).
#include "tools/engine/trainer.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "autograd/cuda_allocator.h"
#include "dist/data_parallel.h"
#include "dist/shard.h"
#include "ops/loss/cross_entropy.h"
#include "ops/optim/grad_norm.h"
#include "tools/engine/loaders.h"
#include "tools/engine/run_folder.h"
#include "tools/engine/trainer_internal.h"
#include "tools/engine/weights.h"

namespace fs = std::filesystem;

namespace mo::tools {

namespace detail {

std::atomic<bool> g_stop{false};

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace detail

using detail::finite_probe;
using detail::kStatCols;
using detail::kStatRows;
using detail::now_s;

namespace {

Device choose_device(const std::string& want, const dist::ProcessGroup& pg) {
  if (want == "cpu") return Device::cpu();
  if (want == "cuda") {
    MO_CHECK(pg.device().is_cuda(), "config key 'train.device' is 'cuda' but {}",
             cuda_available() ? "this rank was given no GPU" : "no GPU is visible (or the build has no CUDA)");
  }
  return pg.device();
}

}  // namespace

void Trainer::request_stop() { detail::g_stop.store(true); }

Trainer::Trainer(const TrainConfig& cfg, std::shared_ptr<dist::ProcessGroup> pg, std::FILE* out)
    : cfg_(cfg), pg_(std::move(pg)), out_(out) {
  cfg_.validate();
  if (!pg_) {
    dist::InitOptions io;
    io.use_gpu = cfg_.train.device != "cpu";
    pg_ = dist::init(io);
  }
  const int rank = pg_->rank(), world = pg_->world_size();
  if (cfg_.train.output == "auto") cfg_.train.output = make_auto_run_folder(cfg_.model.name, cfg_.data.img_size, *pg_);
  progress_ = std::make_unique<Progress>(out_, cfg_.log.progress, cfg_.log.every_steps, pg_->is_main());
  if (pg_->is_main()) {
    std::error_code ec;
    fs::create_directories(cfg_.train.output, ec);
    MO_CHECK(!ec, "config key 'train.output': cannot create '{}': {}", cfg_.train.output, ec.message());
    progress_->open_log(cfg_.train.output + "/log.txt");
  }
  logged([this] { build(); });
}

// f(), with an error that ends the run also written to the run's log (the console has it from the caller).
template <typename F>
auto Trainer::logged(F f) -> decltype(f()) {
  try {
    return f();
  } catch (const std::exception& e) {
    progress_->log_line(fmt::format("error: {}", e.what()));
    throw;
  }
}

void Trainer::build() {
  const int rank = pg_->rank(), world = pg_->world_size();
  config_yaml_ = dump_train_config(cfg_);
  dev_ = choose_device(cfg_.train.device, *pg_);
  if (dev_.is_cuda()) stream_ = std::make_unique<CudaOwnStream>(dev_.index);
  pace_ = std::make_unique<CudaRunAhead>(dev_.is_cuda() ? static_cast<int>(cfg_.train.run_ahead) : 0);
  compute_ = cfg_.train.precision == "bf16" && dev_.is_cuda() ? DType::bf16 : DType::f32;
  if (cfg_.train.precision == "bf16" && dev_.is_cpu())
    say("note: bf16 needs a GPU; training in fp32 on the CPU");
  accum_ = dist::accumulation_steps(cfg_.train.global_batch, world, cfg_.train.batch_size);
  sched_ = cfg_.lr_schedule();
  total_epochs_ = sched_.total_epochs();

  train_ = std::make_unique<data::Loader>(train_loader_config(cfg_, rank, world, dev_, compute_));
  if (cfg_.train.eval_every > 0)
    eval_ = std::make_unique<data::Loader>(eval_loader_config(cfg_, rank, world, dev_, compute_));
  const auto& ds = train_->dataset();
  class_names_ = ds.classes();
  MO_CHECK(ds.num_classes() >= 2, "'{}' has one class folder ('{}'): a classifier needs at least 2 classes to learn "
           "anything", ds.folder(), ds.classes().front());
  MO_CHECK(ds.num_classes() == cfg_.model.num_classes,
           "config key 'model.num_classes' is {} but '{}' has {} classes", cfg_.model.num_classes, ds.folder(),
           ds.num_classes());
  steps_per_epoch_ = train_->batches_per_epoch() / accum_;
  MO_CHECK(steps_per_epoch_ > 0, "'{}' has {} images per rank: not enough for one step of {} x {} micro-batches",
           ds.folder(), train_->samples_per_rank(), accum_, cfg_.train.batch_size);
  if (cfg_.train.steps_per_epoch > 0) steps_per_epoch_ = std::min(steps_per_epoch_, cfg_.train.steps_per_epoch);
  total_steps_ = total_epochs_ * steps_per_epoch_;
  if (cfg_.train.max_steps > 0) total_steps_ = std::min(total_steps_, cfg_.train.max_steps);

  const nn::ClassifierSpec mc{cfg_.model.name, cfg_.model.num_classes, cfg_.model.drop_path_rate,
                              cfg_.model.attention};
  model_ = nn::make_classifier(mc, static_cast<uint64_t>(cfg_.train.seed));
  // model.init: weights to start from; a classifier for another number of classes starts afresh (timm's
  // fine-tuning behaviour), and the summary line says so.
  if (!cfg_.model.init.empty())
    say(load_weights(*model_, cfg_.model.init, true, model_->classifier_parameter_names()).summary());

  nn::AdamWOptions ao;
  ao.lr = cfg_.optim.lr;
  ao.beta1 = cfg_.optim.betas[0];
  ao.beta2 = cfg_.optim.betas[1];
  ao.eps = cfg_.optim.eps;
  ao.weight_decay = cfg_.optim.weight_decay;
  opt_ = std::make_unique<nn::AdamW>(*model_, dev_, compute_, ao);
  if (cfg_.model_ema)
    ema_ = std::make_unique<ModelEma>(mc, *opt_, dev_, compute_, cfg_.model_ema_decay, cfg_.model_ema_warmup);

  ckpt_ = std::make_unique<CheckpointManager>(cfg_.train.output + "/checkpoints", cfg_.ckpt.keep_last,
                                              cfg_.ckpt.keep_best);
  if (pg_->is_main()) {
    // Temporaries of writes that a kill interrupted (their process is gone): nobody will rename them.
    for (const std::string& dir : {cfg_.train.output, ckpt_->dir()}) {
      const std::vector<std::string> removed = remove_stale_temp_files(dir);
      for (const std::string& f : removed) say("removed the temporary file of an interrupted write: " + f);
    }
  }
  if (cfg_.train.resume.empty()) {
    // A fresh run here would overwrite, prune and mix into that run's files.
    const std::vector<std::string> old = ckpt_->list();
    MO_CHECK(old.empty(), "train.output '{}' already holds checkpoints of a run (latest: {}): continue it with "
             "--set train.resume=auto, or choose another train.output", cfg_.train.output, old.back());
  } else {
    resume();
  }
  if (world > 1) {
    dist::DataParallelOptions o;
    o.bucket_bytes = std::max<size_t>(1, static_cast<size_t>(cfg_.ddp.bucket_mb * 1048576.0));
    o.first_bucket_bytes = std::min(o.first_bucket_bytes, o.bucket_bytes);
    ddp_ = std::make_unique<dist::DataParallel>(pg_, model_->named_parameters(), o);
  }

  if (pg_->is_main()) {
    // Through a temporary and rename(): whatever sits at config.yaml (even a named pipe) is replaced, not opened.
    const std::string cfg_file = cfg_.train.output + "/config.yaml", tmp = temp_file_name(cfg_file);
    {
      std::ofstream f(tmp, std::ios::trunc);
      f << config_yaml_;
      f.flush();
      MO_CHECK(f.good(), "cannot write '{}'", tmp);
    }
    MO_CHECK(std::rename(tmp.c_str(), cfg_file.c_str()) == 0, "cannot rename '{}' to '{}': {}", tmp, cfg_file,
             std::strerror(errno));
    // Read or replaced at every epoch end: refuse a folder, pipe or device there now, not after an epoch.
    for (const char* name : {"summary.csv", "curves.svg"}) {
      const std::string f = cfg_.train.output + "/" + name;
      MO_CHECK(!fs::exists(f) || fs::is_regular_file(f), "'{}' is not a regular file (a folder, named pipe or "
               "device): cannot keep the run's {} there", f, name);
    }
    if (cfg_.log.tensorboard) tb_ = std::make_unique<TensorBoardWriter>(cfg_.train.output + "/tb");
  }
}

Trainer::~Trainer() = default;

void Trainer::say(const std::string& msg) { progress_->message(msg); }

void Trainer::train_step(int64_t epoch, int64_t k) {
  lr_ = sched_.for_step(epoch, k, steps_per_epoch_);
  if (!step_stats_.defined()) step_stats_ = Tensor::zeros({kStatRows, kStatCols}, DType::f32, dev_);
  MO_ASSERT(stat_rows_ < kStatRows);
  const int64_t row = step_stats_.offset() + kStatCols * stat_rows_;
  for (int64_t micro = 0; micro < accum_; ++micro) {
    data::Batch b;
    MO_CHECK(train_->next(b), "the training loader ran out of batches in epoch {} at step {}", epoch, k);
    model_->set_drop_path_key(static_cast<uint64_t>(cfg_.train.seed),
                              static_cast<uint64_t>(global_step_ * accum_ + micro));
    if (ddp_) ddp_->set_sync(micro == accum_ - 1);
    Tensor loss = soft_target_cross_entropy(model_->forward_nhwc(b.images), b.targets);
    loss.backward();
    Tensor l = loss.detach();
    step_stats_.as_strided(l.shape(), contiguous_strides(l.shape()), row).add_(l.to(DType::f32));
  }
  window_micro_ += accum_;
  epoch_micro_ += accum_;
  if (ddp_) ddp_->finish();
  // The gradients' finiteness probe (the same on every rank after the all-reduce).
  step_stats_.as_strided({1}, {1}, row + 1).copy_(finite_probe(opt_->grads()));
  // Clipping: once per optimizer step, on the accumulated (and all-reduced) gradient; [norm, coef] stay
  // on the device and AdamW multiplies by coef there.
  Tensor clip;
  if (cfg_.optim.clip_grad > 0) {
    clip = clip_grad_norm(opt_->grads(), 1.0 / static_cast<double>(accum_), cfg_.optim.clip_grad);
    step_stats_.as_strided({1}, {1}, row + 2).copy_(clip.as_strided({1}, {1}, clip.offset()));
  }
  ++stat_rows_;
  opt_->step(lr_, 1.0 / static_cast<double>(accum_), clip, 1);
  if (ddp_) ddp_->zero_grad();
  else opt_->zero_grad();
  ++global_step_;
  if (ema_) ema_->update(global_step_);
  pace_->mark();
  step_in_epoch_ = k + 1;
  ++epoch_steps_run_;
}

TrainResult Trainer::fit() {
  return logged([this] { return fit_steps(); });
}

TrainResult Trainer::fit_steps() {
  TrainResult r;
  say(fmt::format("{}: {:.2f}M parameters, {} {}, {} rank(s) x batch {} x {} accumulation = {} per step, "
                  "{} steps/epoch, {} epochs",
                  cfg_.model.name, static_cast<double>(model_->num_parameters()) / 1e6, dev_.str(),
                  dtype_name(compute_), pg_->world_size(), cfg_.train.batch_size, accum_, cfg_.train.global_batch,
                  steps_per_epoch_, total_epochs_));
  if (cfg_.data.synthetic)
    say("note: data.synthetic: the training samples are noise, no image file is read (a speed measurement: the "
        "weights learn nothing useful)");
  model_->train();
  run_start_ = window_start_ = last_step_end_ = now_s();
  stat_first_step_ = global_step_;
  const double images_per_step = static_cast<double>(cfg_.train.global_batch);
  const int world = pg_->world_size();
  for (int64_t epoch = epoch_; epoch < total_epochs_ && global_step_ < total_steps_; ++epoch) {
    epoch_bad_start_ = train_->bad_samples();  // before the workers start on the epoch
    train_->start_epoch(epoch, step_in_epoch_ * accum_);
    if (step_in_epoch_ == 0) {  // else resumed mid-epoch: the sums so far came from the checkpoint
      epoch_micro_ = 0;
      epoch_loss_sum_ = 0;
      epoch_norm_sum_ = 0;
      epoch_norm_count_ = 0;
    }
    epoch_start_ = now_s();
    epoch_input_start_ = train_->stats();
    epoch_steps_run_ = 0;
    for (int64_t k = step_in_epoch_; k < steps_per_epoch_; ++k) {
      train_step(epoch, k);
      const double t = now_s();
      const double dt = t - last_step_end_;
      last_step_end_ = t;
      step_time_ema_ = steps_this_run_++ == 0 ? dt : 0.9 * step_time_ema_ + 0.1 * dt;
      ++window_steps_;
      const bool log_now = global_step_ % cfg_.log.every_steps == 0 || k + 1 == steps_per_epoch_;
      const bool epoch_end = k + 1 == steps_per_epoch_;
      const bool last = global_step_ >= total_steps_;
      const bool ckpt_now = cfg_.ckpt.every_steps > 0 && global_step_ % cfg_.ckpt.every_steps == 0;
      // Reading the step buffer waits for the GPU: only where the loss is logged anyway, before any
      // checkpoint, and when the buffer is full; on the CPU also for a progress bar's loss (the same
      // policy on every device otherwise, so the CPU tests run the GPU's path).
      const bool read_now = (dev_.is_cpu() && progress_->is_bar()) || log_now || epoch_end || last || ckpt_now ||
                            stat_rows_ == kStatRows;
      const int64_t code = read_now ? flush_step_stats() : 0;
      // One collective per step with several ranks: the stop request and each rank's finiteness verdict.
      std::vector<int64_t> flags(1 + static_cast<size_t>(world), 0);
      flags[0] = detail::g_stop.load() ? 1 : 0;
      flags[1 + static_cast<size_t>(pg_->rank())] = code;
      if (world > 1) flags = pg_->all_reduce_sum(flags);
      fail_if_non_finite(std::vector<int64_t>(flags.begin() + 1, flags.end()), code);
      if (flags[0] > 0) r.interrupted = true;
      const bool stop = flags[0] > 0 || last;
      if (stop) check_finite();  // before the checkpoint below (read_now may differ between ranks: a bar)
      if (read_now) last_loss_ = window_loss_sum_ / static_cast<double>(window_micro_);
      StepStats st{epoch, total_epochs_, k + 1, steps_per_epoch_, global_step_, total_steps_, last_loss_, lr_,
                   images_per_step / step_time_ema_, step_time_ema_ * static_cast<double>(total_steps_ - global_step_)};
      if (log_now) {
        st.images_per_s = images_per_step * static_cast<double>(window_steps_) / (t - window_start_);
        if (window_norm_count_ > 0) st.grad_norm = window_norm_sum_ / static_cast<double>(window_norm_count_);
        if (tb_) {
          tb_->add_scalar("train/loss", last_loss_, global_step_);
          tb_->add_scalar("train/lr", lr_, global_step_);
          tb_->add_scalar("train/images_per_s", st.images_per_s, global_step_);
          if (st.grad_norm >= 0) tb_->add_scalar("train/grad_norm", st.grad_norm, global_step_);
          tb_->flush();
        }
        window_norm_sum_ = 0;
        window_norm_count_ = 0;
        window_loss_sum_ = 0;
        window_micro_ = window_steps_ = 0;
        window_start_ = t;
      }
      progress_->step(st);
      if (!epoch_end && (stop || ckpt_now)) {
        r.last_checkpoint = save(std::nullopt, false);
        if (!r.last_checkpoint.empty()) say("saved " + r.last_checkpoint);
      }
      if (stop && !epoch_end) {
        r.stopped = true;
        break;
      }
    }
    if (r.stopped) break;
    end_of_epoch(epoch, r);
    bool stop = detail::g_stop.load();
    if (world > 1) stop = pg_->all_reduce_sum(std::vector<int64_t>{stop ? 1 : 0})[0] > 0;
    if (stop) {
      r.stopped = r.interrupted = true;
      break;
    }
  }
  if (global_step_ < total_epochs_ * steps_per_epoch_) r.stopped = true;
  r.global_step = global_step_;
  r.epochs_done = epoch_;
  r.best_top1 = best_top1_;
  r.train_seconds = now_s() - run_start_;
  detail::g_stop.store(false);
  return r;
}

}  // namespace mo::tools
