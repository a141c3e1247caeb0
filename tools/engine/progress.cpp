// progress.cpp: the progress bar / plain lines and summary.csv.
#include "tools/engine/progress.h"

#include "autograd/parse.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "autograd/check.h"
#include "autograd/parse.h"
#include "tools/engine/checkpoint.h"

namespace mo::tools {

std::string format_duration(double seconds) {
  if (!(seconds >= 0) || seconds > 1e8) return "--:--";
  int64_t s = static_cast<int64_t>(seconds + 0.5);
  if (s >= 3600) return fmt::format("{}:{:02d}:{:02d}", s / 3600, (s / 60) % 60, s % 60);
  return fmt::format("{:02d}:{:02d}", s / 60, s % 60);
}

Progress::Progress(std::FILE* out, const std::string& mode, int64_t every, bool enabled)
    : out_(out), enabled_(enabled), every_(every < 1 ? 1 : every) {
  bar_ = mode == "bar" || (mode == "auto" && isatty(fileno(out)));
}

Progress::~Progress() {
  if (log_) std::fclose(log_);
}

void Progress::open_log(const std::string& path) {
  if (!enabled_) return;
  std::error_code ec;
  const std::filesystem::file_status st = std::filesystem::status(path, ec);
  MO_CHECK(!std::filesystem::exists(st) || std::filesystem::is_regular_file(st),
           "'{}' is not a regular file (a folder, named pipe or device): cannot keep the run's log there", path);
  if (log_) std::fclose(log_);
  log_ = std::fopen(path.c_str(), "a");
  MO_CHECK(log_ != nullptr, "cannot open the run's log '{}': {}", path, std::strerror(errno));
}

void Progress::log_line(const std::string& line) {
  if (!log_) return;
  std::fprintf(log_, "%s\n", line.c_str());
  std::fflush(log_);
}

void Progress::end_bar_line() {
  if (bar_open_) std::fputc('\n', out_);
  bar_open_ = false;
}

void Progress::message(const std::string& text) {
  if (!enabled_) return;
  end_bar_line();
  std::fprintf(out_, "%s\n", text.c_str());
  std::fflush(out_);
  log_line(text);
}

void Progress::eval_step(const std::string& label, int64_t done, int64_t total) {
  if (!enabled_ || total <= 0) return;
  const bool last = done >= total;
  if (bar_) {
    auto now = std::chrono::steady_clock::now();
    if (!last && now - last_draw_ < std::chrono::milliseconds(100)) return;
    last_draw_ = now;
    constexpr int kWidth = 24;
    std::string bar(static_cast<size_t>(kWidth * std::min(done, total) / total), '#');
    bar.resize(kWidth, '.');
    std::fprintf(out_, "\r\033[K%s [%s] %lld/%lld", label.c_str(), bar.c_str(), static_cast<long long>(done),
                 static_cast<long long>(total));
    bar_open_ = true;
    if (last) {
      std::fputs("\r\033[K", out_);  // the result line replaces the bar
      bar_open_ = false;
    }
    std::fflush(out_);
    return;
  }
  // Plain lines: a quarter at a time (a log is not a film).
  const int64_t quarter = std::max<int64_t>(1, (total + 3) / 4);
  if (done % quarter != 0 && !last) return;
  const std::string line = fmt::format("{} {}/{} batches", label, done, total);
  std::fprintf(out_, "%s\n", line.c_str());
  std::fflush(out_);
  log_line(line);
}

void Progress::step(const StepStats& s) {
  if (!enabled_) return;
  const bool last_of_epoch = s.step_in_epoch == s.steps_per_epoch;
  if (bar_) {
    // Redraw at most 10 times a second, and always at the end of an epoch.
    auto now = std::chrono::steady_clock::now();
    if (!last_of_epoch && now - last_draw_ < std::chrono::milliseconds(100)) return;
    last_draw_ = now;
    constexpr int kWidth = 24;
    int filled = s.steps_per_epoch > 0 ? static_cast<int>(kWidth * s.step_in_epoch / s.steps_per_epoch) : 0;
    std::string bar(filled, '#');
    bar.resize(kWidth, '.');
    std::fprintf(out_, "\r\033[Kepoch %lld/%lld [%s] %lld/%lld  loss %.4f  lr %.3e  %.0f img/s  ETA %s",
                 static_cast<long long>(s.epoch), static_cast<long long>(s.total_epochs), bar.c_str(),
                 static_cast<long long>(s.step_in_epoch), static_cast<long long>(s.steps_per_epoch), s.loss, s.lr,
                 s.images_per_s, format_duration(s.eta_s).c_str());
    bar_open_ = true;
    if (last_of_epoch) end_bar_line();
    std::fflush(out_);
  }
  if (s.global_step % every_ != 0 && !last_of_epoch) return;
  const std::string line = fmt::format("epoch {}/{} step {}/{} ({})  loss {:.4f}  lr {:.3e}{}  {:.1f} img/s  ETA {}",
                                       s.epoch, s.total_epochs, s.step_in_epoch, s.steps_per_epoch, s.global_step,
                                       s.loss, s.lr, s.grad_norm >= 0 ? fmt::format("  grad-norm {:.4g}", s.grad_norm)
                                                                     : std::string(),
                                       s.images_per_s, format_duration(s.eta_s));
  log_line(line);  // the log gets the plain lines also under a bar
  if (bar_) return;
  std::fprintf(out_, "%s\n", line.c_str());
  std::fflush(out_);
}

const char* const kSummaryHeader =
    "epoch,train_loss,eval_loss,eval_top1,eval_top5,lr,train_bad_images,eval_bad_images,eval_non_finite,"
    "eval_loss_ema,eval_top1_ema,eval_top5_ema,grad_norm,images_per_s";

void update_summary_csv(const std::string& path, const EpochSummary& row) {
  const std::string header = kSummaryHeader;
  const auto columns = static_cast<size_t>(std::count(header.begin(), header.end(), ',') + 1);
  std::vector<std::string> kept;
  std::error_code ec;
  const std::filesystem::file_status st = std::filesystem::status(path, ec);
  MO_CHECK(!std::filesystem::exists(st) || std::filesystem::is_regular_file(st),
           "'{}' is not a regular file (a folder, named pipe or device): cannot keep the run's summary there", path);
  {
    std::ifstream in(path);
    std::string line;
    bool first = true;
    while (std::getline(in, line)) {
      if (first) {
        first = false;
        if (line == header) continue;
      }
      if (line.empty()) continue;
      // a line that is not ours (no epoch number first, or a negative one) is dropped, as are later epochs
      const std::optional<int64_t> e = parse_int(std::string_view(line).substr(0, line.find(',')));
      if (!e || *e < 0 || *e >= row.epoch) continue;
      for (auto n = static_cast<size_t>(std::count(line.begin(), line.end(), ',') + 1); n < columns; ++n) line += ',';
      kept.push_back(line);
    }
  }
  auto opt = [](const std::optional<double>& v) { return v ? fmt::format("{:.6g}", *v) : std::string(); };
  auto opt_int = [](const std::optional<int64_t>& v) { return v ? std::to_string(*v) : std::string(); };
  kept.push_back(fmt::format("{},{:.6g},{},{},{},{:.6g},{},{},{},{},{},{},{},{}", row.epoch, row.train_loss,
                             opt(row.eval_loss), opt(row.eval_top1), opt(row.eval_top5), row.lr, row.train_bad_images,
                             opt_int(row.eval_bad_images), opt_int(row.eval_non_finite), opt(row.eval_loss_ema),
                             opt(row.eval_top1_ema), opt(row.eval_top5_ema), opt(row.grad_norm),
                             opt(row.images_per_s)));
  const std::string tmp = temp_file_name(path);
  {
    std::ofstream out(tmp, std::ios::trunc);
    MO_CHECK(out.good(), "cannot write '{}'", tmp);
    out << header << "\n";
    for (auto& l : kept) out << l << "\n";
    out.flush();
    MO_CHECK(out.good(), "write to '{}' failed", tmp);
  }
  MO_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, "cannot rename '{}' to '{}'", tmp, path);
}

}  // namespace mo::tools
