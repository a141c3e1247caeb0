// trainer_epoch.cpp: what happens at an epoch's end: the epoch's mean loss over the ranks, evaluation
// of the model (and of its EMA), the log line, TensorBoard, the summary.csv row, curves.svg and the
// epoch's checkpoint (best.mo by the model's top-1). An evaluation that needed stand-ins for unreadable
// images is refused, after the epoch's training is saved.
#include <algorithm>

#include "tools/engine/curves.h"
#include "tools/engine/trainer.h"
#include "tools/engine/trainer_internal.h"

namespace mo::tools {

using detail::now_s;

// Which side limits: the time the step waited for batches against the epoch's training time, and where
// the workers' time went by stage (this epoch, mean over the ranks; the slowest rank's wait too).
void Trainer::log_input(int64_t epoch, double train_time) {
  const data::LoaderStats now = train_->stats(), &s0 = epoch_input_start_;
  std::vector<double> v = {now.wait_s - s0.wait_s, now.deliver_s - s0.deliver_s, now.busy_s - s0.busy_s,
                           static_cast<double>(now.samples - s0.samples)};
  for (int k = 0; k < data::kNumStages; ++k) v.push_back(now.stage_s[k] - s0.stage_s[k]);
  v.push_back(static_cast<double>(now.gpu_decoded - s0.gpu_decoded));
  v.push_back(static_cast<double>(now.gpu_fallbacks - s0.gpu_fallbacks));
  const int64_t world = pg_->world_size();
  std::vector<double> wait_max = {v[0]};
  if (world > 1) {
    // the process group only sums: each rank's wait in its own slot, then the largest
    std::vector<double> each(static_cast<size_t>(world), 0.0);
    each[static_cast<size_t>(pg_->rank())] = v[0];
    each = pg_->all_reduce_sum(each);
    wait_max[0] = *std::max_element(each.begin(), each.end());
    v = pg_->all_reduce_sum(v);
    for (double& x : v) x /= static_cast<double>(world);
  }
  if (train_time <= 0 || v[3] <= 0) return;
  std::string stages;
  const double work = std::max(1e-12, v[2]);
  for (int k = 0; k < data::kNumStages; ++k)
    if (v[4 + k] > 0)
      stages += fmt::format("{}{} {:.0f}%", stages.empty() ? "" : ", ", data::stage_name(static_cast<data::Stage>(k)),
                            100.0 * v[4 + k] / work);
  const double gpu = v[4 + data::kNumStages], cpu = v[5 + data::kNumStages];
  const std::string decoder = train_->decoder();
  if (decoder == "synthetic") stages += "; synthetic input, no file read";
  else if (decoder != "cpu") {
    stages += fmt::format("; decoder {}: {:.0f} images decoded on the GPU, {:.0f} on the CPU", train_->decoder(),
                          gpu, cpu);
    const std::string batches = data::describe(s0.gpu_times, now.gpu_times);  // this rank's
    if (!batches.empty()) stages += fmt::format("; rank {}: {}", pg_->rank(), batches);
  }
  say(fmt::format("epoch {}: input: the step waited {:.1f} s of {:.1f} s for batches ({:.1f}%{}), upload {:.1f} s; "
                  "workers {:.1f} s busy, {:.0f} images/s each thread-second ({})",
                  epoch, v[0], train_time, 100.0 * v[0] / train_time,
                  world > 1 ? fmt::format(", slowest rank {:.1f} s", wait_max[0]) : "", v[1], v[2],
                  v[3] / work, stages));
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
      c = evaluate(*model_, *eval_, *pg_, [&](int64_t d, int64_t n) { progress_->eval_step("eval", d, n); },
                   &detail::g_stop);
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
  log_input(epoch, train_time);
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

std::optional<EvalResult> Trainer::evaluate_ema(int64_t epoch, EpochSummary& row) {
  // The same images as the model's pass just before (stand-ins would have ended the run there).
  const double t0 = now_s();
  const EvalResult e = evaluate(ema_->eval_model(), *eval_, *pg_,
                                [&](int64_t d, int64_t n) { progress_->eval_step("eval EMA", d, n); },
                                &detail::g_stop);
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
