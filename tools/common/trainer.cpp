// trainer.cpp: setup (device, loaders, model, optimizer, resume) and the loop (see trainer.h).
#include "tools/common/trainer.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "autograd/cuda_allocator.h"
#include "dist/data_parallel.h"
#include "dist/shard.h"
#include "ops/common.h"
#include "ops/linear/linear.h"  // cuda::sum_rows
#include "ops/loss/cross_entropy.h"
#include "ops/optim/grad_norm.h"
#include "tools/common/curves.h"
#include "tools/common/loaders.h"
#include "tools/common/run_folder.h"
#include "tools/common/weights.h"

namespace fs = std::filesystem;

namespace mo::tools {
namespace {

std::atomic<bool> g_stop{false};

constexpr int64_t kStatRows = 256;  // steps between reads of the step buffer at most
constexpr int64_t kStatCols = 3;    // loss sum, finiteness probe, gradient norm

// A non-finite step is reported across ranks as a code: 2 * step + (1 for the gradient) + 1; 0: none.
int64_t bad_code(int64_t step, bool gradient) { return 2 * step + (gradient ? 1 : 0) + 1; }

// One value, a (1) float32 tensor on the device of the flat float32 buffer `flat`, that is NaN or Inf when
// an element of `flat` is (or when their sum overflows, which only diverged values do). On the CPU the
// norm (double accumulation); on the GPU the sum, as column sums of a (n / 1024, 1024) view and then of
// the 1024 partial sums and of the tail: three launches of the bias-gradient reduction, no host sync.
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

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

Device choose_device(const std::string& want, const dist::ProcessGroup& pg) {
  if (want == "cpu") return Device::cpu();
  if (want == "cuda") {
    MO_CHECK(pg.device().is_cuda(), "config key 'train.device' is 'cuda' but {}",
             cuda_available() ? "this rank was given no GPU" : "no GPU is visible (or the build has no CUDA)");
  }
  return pg.device();
}

const Tensor* find_tensor(const std::vector<std::pair<std::string, Tensor>>& ts, const std::string& name) {
  for (auto& [n, t] : ts)
    if (n == name) return &t;
  return nullptr;
}

}  // namespace

void Trainer::request_stop() { g_stop.store(true); }

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
  config_yaml_ = dump_train_config(cfg_);
  dev_ = choose_device(cfg_.train.device, *pg_);
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
  if (world > 1) ddp_ = std::make_unique<dist::DataParallel>(pg_, model_->named_parameters());

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

// --- checkpoints -----------------------------------------------------------------------------------

void Trainer::resume() {
  CheckpointState s;
  std::string path;
  if (cfg_.train.resume == "auto") {
    std::vector<std::string> warnings;
    auto got = ckpt_->load_latest(warnings, &path);
    for (auto& w : warnings) say("warning: " + w);
    // Starting over would prune the unreadable files; they may be fine for another build (format version).
    MO_CHECK(got || warnings.empty(), "train.resume=auto: none of the {} checkpoints in '{}' can be read (see the "
             "warnings above); move them away to start from scratch", warnings.size(), ckpt_->dir());
    if (!got) {
      say(fmt::format("no checkpoint to resume from in {}: starting from scratch", ckpt_->dir()));
      return;
    }
    s = std::move(*got);
  } else {
    path = cfg_.train.resume;
    MO_CHECK(!fs::is_regular_file(path) || is_mo_checkpoint(path),
             "config key 'train.resume': '{}' is not a mo checkpoint (.mo); to start from PyTorch or safetensors "
             "weights, use model.init", path);
    s = load_checkpoint(path);
  }
  apply_checkpoint(s, path);
}

void Trainer::apply_checkpoint(const CheckpointState& s, const std::string& path) {
  MO_CHECK(s.model_name == cfg_.model.name, "checkpoint '{}' holds a {} but config key 'model.name' is {}", path,
           s.model_name, cfg_.model.name);
  if (!s.config_yaml.empty()) {  // the same weights under the other attention mask would train another model
    TrainConfig saved;
    make_schema(saved).load_string(s.config_yaml, path + " (stored config)");
    MO_CHECK(saved.model.attention == cfg_.model.attention,
             "checkpoint '{}' was trained with model.attention {} but the config says {}", path, saved.model.attention,
             cfg_.model.attention);
  }
  MO_CHECK(!s.optimizer.empty(), "checkpoint '{}' has no optimizer state (weights only): use model.init to start "
           "from it instead of resuming", path);
  MO_CHECK(s.step_in_epoch < steps_per_epoch_, "checkpoint '{}': field 'step_in_epoch' is {} but an epoch has {} "
           "steps in this configuration (batch size, accumulation or train.steps_per_epoch changed?)", path,
           s.step_in_epoch, steps_per_epoch_);
  const bool mid_epoch = s.step_in_epoch > 0;
  dist::check_resume_world_size(s.world_size, pg_->world_size(), mid_epoch);
  MO_CHECK(!mid_epoch || s.sampler_batches_done == s.step_in_epoch * accum_,
           "checkpoint '{}' stopped mid-epoch after {} micro-batches of {} steps; resuming it needs the same "
           "batch size and accumulation ({} micro-batches per step now)", path, s.sampler_batches_done,
           s.step_in_epoch, accum_);
  Tensor master = opt_->master(), m = opt_->exp_avg(), v = opt_->exp_avg_sq();
  for (const auto& slot : opt_->slots()) {
    const Tensor* w = find_tensor(s.model, slot.name);
    const Tensor* tm = find_tensor(s.optimizer, slot.name + ".exp_avg");
    const Tensor* tv = find_tensor(s.optimizer, slot.name + ".exp_avg_sq");
    MO_CHECK(w && tm && tv, "checkpoint '{}' lacks parameter '{}' (or its optimizer state)", path, slot.name);
    for (const Tensor* t : {w, tm, tv})  // checkpoints hold the reference layout (padding removed)
      MO_CHECK(t->shape() == slot.reference_shape, "checkpoint '{}': '{}' has shape {} but the model's is {}", path,
               slot.name, shape_str(t->shape()), shape_str(slot.reference_shape));
    opt_->import_slot(master, slot, *w);
    opt_->import_slot(m, slot, *tm);
    opt_->import_slot(v, slot, *tv);
  }
  if (ema_ && s.ema.empty()) {  // before the finiteness check, which covers the EMA too
    ema_->reset_to_master();
    say(fmt::format("note: checkpoint '{}' holds no model EMA; the EMA starts from its weights", path));
  } else if (ema_) {
    ema_->import_state(s.ema, path);
  }
  const std::string bad = first_non_finite();
  MO_CHECK(bad.empty(), "checkpoint '{}' holds NaN or Inf in '{}' (saved from a diverged run?): resume from an "
           "earlier checkpoint (train.resume=<path>) or start afresh", path, bad);
  opt_->set_step_count(s.optimizer_step);
  opt_->sync_compute_weights();
  // The epoch so far (a mid-epoch checkpoint): its summary.csv means cover the steps before the stop too.
  epoch_loss_sum_ = s.step_in_epoch > 0 ? s.epoch_loss_sum : 0;
  epoch_micro_ = s.step_in_epoch > 0 ? s.epoch_loss_count : 0;
  epoch_norm_sum_ = s.step_in_epoch > 0 ? s.epoch_grad_norm_sum : 0;
  epoch_norm_count_ = s.step_in_epoch > 0 ? s.epoch_grad_norm_count : 0;
  epoch_ = s.epoch;
  step_in_epoch_ = s.step_in_epoch;
  global_step_ = s.step;
  best_top1_ = s.best_metric;
  best_epoch_ = s.best_epoch;
  say(fmt::format("resumed from {}: epoch {}, step {} ({} of the epoch)", path, epoch_, global_step_,
                  step_in_epoch_));
}

CheckpointState Trainer::make_state(std::optional<double> metric) const {
  CheckpointState s;
  s.config_yaml = config_yaml_;
  s.model_name = cfg_.model.name;
  s.epoch = epoch_;
  s.step = global_step_;
  s.step_in_epoch = step_in_epoch_;
  for (const auto& slot : opt_->slots()) {
    s.model.emplace_back(slot.name, opt_->export_slot(opt_->master(), slot));
    s.optimizer.emplace_back(slot.name + ".exp_avg", opt_->export_slot(opt_->exp_avg(), slot));
    s.optimizer.emplace_back(slot.name + ".exp_avg_sq", opt_->export_slot(opt_->exp_avg_sq(), slot));
  }
  s.optimizer_step = opt_->step_count();
  const auto seed = static_cast<uint64_t>(cfg_.train.seed);
  s.rng.push_back({"drop_path", seed, 0, static_cast<uint64_t>(global_step_ * accum_)});  // keyed by micro-step
  s.sampler_epoch = epoch_;
  s.sampler_batches_done = step_in_epoch_ * accum_;
  s.sampler_seed = seed;
  s.world_size = pg_->world_size();
  s.metric = metric;
  s.best_metric = best_top1_;
  s.best_epoch = best_epoch_;
  s.class_names = class_names_;
  if (ema_) s.ema = ema_->export_state();
  s.epoch_loss_count = step_in_epoch_ > 0 ? epoch_micro_ : 0;
  s.epoch_grad_norm_sum = step_in_epoch_ > 0 ? epoch_norm_sum_ : 0;
  s.epoch_grad_norm_count = step_in_epoch_ > 0 ? epoch_norm_count_ : 0;
  return s;
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

std::string Trainer::save(std::optional<double> metric, bool is_best) {
  // On every rank (the weights are the same on all), so that all stop together.
  const std::string bad = first_non_finite();
  MO_CHECK(bad.empty(), "the model's state after step {} is not finite ('{}' holds NaN or Inf, or values beyond "
           "float range): not saving it as a checkpoint; the checkpoints already in '{}' are kept. The training "
           "diverged: lower optim.lr (now {})", global_step_, bad, ckpt_->dir(), cfg_.optim.lr);
  // The epoch's loss sum over the ranks (their mean; each rank's count is the same): a resumed epoch's
  // mean then covers every rank's steps before the stop. Mid-epoch saves happen on all ranks together.
  double loss_sum = epoch_loss_sum_;
  if (step_in_epoch_ > 0 && pg_->world_size() > 1)
    loss_sum = pg_->all_reduce_sum(std::vector<double>{loss_sum})[0] / static_cast<double>(pg_->world_size());
  if (!pg_->is_main()) return "";
  CheckpointState s = make_state(metric);
  s.epoch_loss_sum = step_in_epoch_ > 0 ? loss_sum : 0;
  return ckpt_->save(s, is_best);
}

// --- the loop ----------------------------------------------------------------------------------------

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
  step_in_epoch_ = k + 1;
  ++epoch_steps_run_;
}

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

TrainResult Trainer::fit() {
  TrainResult r;
  say(fmt::format("{}: {:.2f}M parameters, {} {}, {} rank(s) x batch {} x {} accumulation = {} per step, "
                  "{} steps/epoch, {} epochs",
                  cfg_.model.name, static_cast<double>(model_->num_parameters()) / 1e6, dev_.str(),
                  dtype_name(compute_), pg_->world_size(), cfg_.train.batch_size, accum_, cfg_.train.global_batch,
                  steps_per_epoch_, total_epochs_));
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
      flags[0] = g_stop.load() ? 1 : 0;
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
    bool stop = g_stop.load();
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
  g_stop.store(false);
  return r;
}

void Trainer::end_of_epoch(int64_t epoch, TrainResult& r) {
  const int64_t world = pg_->world_size();
  const double train_time = now_s() - epoch_start_;
  std::vector<double> sums = {epoch_loss_sum_ / static_cast<double>(std::max<int64_t>(1, epoch_micro_)),
                              static_cast<double>(train_->bad_samples() - epoch_bad_start_)};
  if (world > 1) sums = pg_->all_reduce_sum(sums);
  const double train_loss = sums[0] / static_cast<double>(world);
  const auto train_bad = static_cast<int64_t>(sums[1]);
  epoch_ = epoch + 1;
  step_in_epoch_ = 0;
  r.last_train_loss = train_loss;
  EpochSummary row;
  row.epoch = epoch;
  row.train_loss = train_loss;
  row.lr = lr_;
  row.train_bad_images = train_bad;
  if (epoch_steps_run_ > 0 && train_time > 0)
    row.images_per_s = static_cast<double>(epoch_steps_run_ * cfg_.train.global_batch) / train_time;
  if (epoch_norm_count_ > 0) row.grad_norm = epoch_norm_sum_ / static_cast<double>(epoch_norm_count_);
  const std::string train_note =
      train_bad > 0 ? fmt::format(" ({} unreadable training images replaced by stand-ins)", train_bad) : "";
  std::optional<double> metric;
  bool is_best = false;
  const bool last = epoch_ == total_epochs_ || global_step_ >= total_steps_;
  auto saved_note = [&] {
    return r.last_checkpoint.empty() ? "" : " (the epoch's training is saved in " + r.last_checkpoint + ")";
  };
  if (eval_ && (epoch_ % cfg_.train.eval_every == 0 || last)) {
    const double t0 = now_s();
    EvalResult c;
    try {
      c = evaluate(*model_, *eval_, *pg_, [&](int64_t d, int64_t n) { progress_->eval_step("eval", d, n); }, &g_stop);
    } catch (const std::exception& e) {
      // The epoch's training is not lost to a failed evaluation: save it (without a metric) first.
      r.last_checkpoint = save(std::nullopt, false);
      MO_FAIL("evaluation after epoch {} failed: {}{}", epoch, e.what(), saved_note());
    }
    if (c.bad_images > 0) {
      // As mo_validate: with stand-ins the accuracy is not the folder's; it must not choose best.mo.
      row.eval_bad_images = c.bad_images;
      if (pg_->is_main()) update_summary_csv(cfg_.train.output + "/summary.csv", row);
      r.last_checkpoint = save(std::nullopt, false);
      MO_FAIL("evaluation after epoch {}: '{}' holds unreadable images (named in the warnings above; {} stand-ins "
              "were drawn), so its accuracy is not that of the folder and is not used{}; fix or remove them and "
              "resume with --set train.resume=auto", epoch, eval_->dataset().folder(), c.bad_images, saved_note());
    }
    if (c.interrupted) {
      say(fmt::format("epoch {}: train loss {:.4f}{}  (evaluation interrupted by the stop request: not counted)", epoch,
                      train_loss, train_note));
    } else {
      r.last_eval = c;
      metric = c.top1_pct();
      row.eval_loss = c.mean_loss();
      row.eval_top1 = c.top1_pct();
      row.eval_top5 = c.top5_pct();
      row.eval_bad_images = 0;
      row.eval_non_finite = c.non_finite;
      is_best = c.top1_pct() > best_top1_;
      if (is_best) best_top1_ = c.top1_pct(), best_epoch_ = epoch;
      say(fmt::format("epoch {}: train loss {:.4f}{}  eval loss {:.4f}  top-1 {:.2f}%  top-5 {:.2f}%  ({} images{}, "
                      "{:.1f} s){}",
                      epoch, train_loss, train_note, c.mean_loss(), c.top1_pct(), c.top5_pct(), c.samples,
                      c.non_finite > 0 ? fmt::format(", {} with NaN/Inf logits counted as wrong", c.non_finite) : "",
                      now_s() - t0, is_best ? "  best" : ""));
      if (tb_) {
        tb_->add_scalar("eval/loss", c.mean_loss(), global_step_);
        tb_->add_scalar("eval/top1", c.top1_pct(), global_step_);
        tb_->add_scalar("eval/top5", c.top5_pct(), global_step_);
      }
      if (ema_) r.last_eval_ema = evaluate_ema(epoch, row);
    }
  } else {
    say(fmt::format("epoch {}: train loss {:.4f}{}", epoch, train_loss, train_note));
  }
  if (tb_) {
    tb_->add_scalar("train/epoch_loss", train_loss, global_step_);
    tb_->flush();
  }
  if (pg_->is_main()) {
    update_summary_csv(cfg_.train.output + "/summary.csv", row);
    try {  // a picture: a failure to draw it (a full disk) is reported, the run and its checkpoint go on
      write_curves_svg(cfg_.train.output + "/summary.csv", cfg_.train.output + "/curves.svg",
                       fmt::format("{} ({})", cfg_.model.name, cfg_.train.output));
    } catch (const std::exception& e) {
      say(fmt::format("warning: curves.svg not updated: {}", e.what()));
    }
  }
  r.last_checkpoint = save(metric, is_best);
  if (!r.last_checkpoint.empty()) say("saved " + r.last_checkpoint);
}

}  // namespace mo::tools

namespace mo::tools {

std::optional<EvalResult> Trainer::evaluate_ema(int64_t epoch, EpochSummary& row) {
  // The same images as the model's pass just before (stand-ins would have ended the run there).
  const double t0 = now_s();
  const EvalResult e = evaluate(ema_->eval_model(), *eval_, *pg_,
                                [&](int64_t d, int64_t n) { progress_->eval_step("eval EMA", d, n); }, &g_stop);
  if (e.interrupted) {
    say(fmt::format("epoch {}: EMA evaluation interrupted by the stop request: not counted", epoch));
    return std::nullopt;
  }
  row.eval_loss_ema = e.mean_loss();
  row.eval_top1_ema = e.top1_pct();
  row.eval_top5_ema = e.top5_pct();
  say(fmt::format("epoch {}: EMA (decay {:.6g})  eval loss {:.4f}  top-1 {:.2f}%  top-5 {:.2f}%  ({:.1f} s)", epoch,
                  ema_->decay_for(global_step_), e.mean_loss(), e.top1_pct(), e.top5_pct(), now_s() - t0));
  if (tb_) {
    tb_->add_scalar("eval_ema/loss", e.mean_loss(), global_step_);
    tb_->add_scalar("eval_ema/top1", e.top1_pct(), global_step_);
    tb_->add_scalar("eval_ema/top5", e.top5_pct(), global_step_);
  }
  return e;
}

}  // namespace mo::tools
