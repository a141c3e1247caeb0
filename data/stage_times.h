// stage_times.h: cumulative time per stage of the input pipeline (read a file, parse its header,
// decode the crop window, crop + resize + flip, RandAugment, then per batch mixup/cutmix with the soft
// targets and erase boxes, and normalise + erase + pack). A Workspace carries one StageTimes that the
// transforms add to; the Loader sums its workers' into LoaderStats (loader.h) and mo_bench_data --profile
// prints them per image. The clock is the steady clock (about 20 ns a read, ~10 reads an image) or, for
// profiles on a shared machine, the calling thread's CPU clock (time it was descheduled is not counted).
#pragma once
#include <time.h>

#include <array>
#include <cstdint>
#include <numeric>

namespace mo::data {

enum class Stage : uint8_t { read, header, decode, resize, augment, mixup, normalize };
constexpr int kNumStages = 7;
inline const char* stage_name(Stage s) {
  constexpr const char* kNames[kNumStages] = {"read", "header", "decode", "resize", "augment", "mixup", "normalize"};
  return kNames[static_cast<int>(s)];
}

struct StageTimes {
  std::array<int64_t, kNumStages> ns{};  // nanoseconds per stage
  bool thread_cpu = false;               // read CLOCK_THREAD_CPUTIME_ID instead of the steady clock
  int64_t now() const {
    timespec ts;
    clock_gettime(thread_cpu ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC, &ts);
    return int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
  }
  int64_t& operator[](Stage s) { return ns[static_cast<size_t>(s)]; }
  int64_t total() const { return std::accumulate(ns.begin(), ns.end(), int64_t(0)); }
};

// Adds the time since its construction (or its last lap()) to times[stage] at each lap(), which returns
// `result` (if (!clock.lap(Stage::decode, decode(...))) return false;).
class StageClock {
 public:
  explicit StageClock(StageTimes& t) : t_(t), last_(t.now()) {}
  bool lap(Stage s, bool result = true) {
    const int64_t n = t_.now();
    t_[s] += n - last_;
    last_ = n;
    return result;
  }

 private:
  StageTimes& t_;
  int64_t last_;
};

}  // namespace mo::data
