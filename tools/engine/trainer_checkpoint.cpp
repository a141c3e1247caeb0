// trainer_checkpoint.cpp: the Trainer's checkpoints: resume() finds and checks the checkpoint to continue
// from and restores weights, moments, EMA, position and the epoch's sums so far (apply_checkpoint);
// save() writes the run's state (make_state) from finite weights only, on rank 0.
#include <filesystem>

#include "dist/shard.h"
#include "tools/engine/trainer.h"

namespace fs = std::filesystem;

namespace mo::tools {

namespace {

const Tensor* find_tensor(const std::vector<std::pair<std::string, Tensor>>& ts, const std::string& name) {
  for (auto& [n, t] : ts)
    if (n == name) return &t;
  return nullptr;
}

}  // namespace

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

}  // namespace mo::tools
