// progress.h: what a training run prints. On a terminal a one-line progress bar redrawn in place
// (epoch, step, loss, lr, images/s, ETA; an "eval" bar during evaluation); otherwise (a log file, a
// pipe) one plain line every `every` steps. With a log file (the run folder's log.txt) every message
// and the plain lines also go there, whatever the console shows. Plus the timm-style summary.csv.
#pragma once
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>

namespace mo::tools {

struct StepStats {
  int64_t epoch = 0, total_epochs = 0;
  int64_t step_in_epoch = 0, steps_per_epoch = 0;  // step_in_epoch counts completed steps (1-based)
  int64_t global_step = 0, total_steps = 0;
  double loss = 0, lr = 0, images_per_s = 0;
  double eta_s = 0;  // to the end of the run
  double grad_norm = -1;  // mean global gradient norm since the last line (optim.clip_grad); < 0: not shown
};

class Progress {
 public:
  // mode: "auto" (bar when `out` is a terminal), "bar" or "lines". `enabled` false prints nothing
  // (the ranks other than 0).
  Progress(std::FILE* out, const std::string& mode, int64_t every, bool enabled = true);
  void step(const StepStats& s);
  // A message on its own line (ends a bar line first).
  void message(const std::string& text);
  // Evaluation progress: `done` of `total` batches of the pass called `label` ("eval", "eval EMA").
  void eval_step(const std::string& label, int64_t done, int64_t total);
  bool is_bar() const { return bar_; }
  // Also write messages and plain step lines to `path` (appended; the file is flushed at every line).
  // Throws naming the file when it cannot be opened.
  void open_log(const std::string& path);
  // A line for the log file only (e.g. the error that ends the run: the console has it already).
  void log_line(const std::string& line);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

 private:
  void end_bar_line();
  std::FILE* out_;
  std::FILE* log_ = nullptr;
  bool bar_ = false, enabled_ = true, bar_open_ = false;
  int64_t every_;
  std::chrono::steady_clock::time_point last_draw_{};
};

// "1:02:03" / "02:03" for a number of seconds.
std::string format_duration(double seconds);

// summary.csv: header epoch,train_loss,eval_loss,eval_top1,eval_top5,lr,train_bad_images,
// eval_bad_images,eval_non_finite,eval_loss_ema,eval_top1_ema,eval_top5_ema,grad_norm,images_per_s
// (the EMA columns with model_ema, grad_norm (the epoch's mean) with optim.clip_grad). Rewritten atomically at every epoch end, dropping rows for epochs >=
// the new one (a resumed run does not duplicate rows); rows of an older file with fewer columns are
// padded. The bad-image columns count the stand-ins drawn for unreadable images in the epoch (all
// ranks); eval_non_finite the validation images whose logits were NaN or Inf (counted as wrong).
struct EpochSummary {
  int64_t epoch = 0;
  double train_loss = 0, lr = 0;
  std::optional<double> eval_loss, eval_top1, eval_top5;
  int64_t train_bad_images = 0;
  std::optional<int64_t> eval_bad_images, eval_non_finite;
  std::optional<double> eval_loss_ema, eval_top1_ema, eval_top5_ema, grad_norm, images_per_s;
};
extern const char* const kSummaryHeader;
void update_summary_csv(const std::string& path, const EpochSummary& row);

}  // namespace mo::tools
