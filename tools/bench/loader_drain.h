// loader_drain.h: mo_bench --loader. A data::Loader over a JPEG ImageFolder (the recipe's full training
// transform) is drained on a thread of its own, on a CUDA stream of its own, while the training step is
// timed: the step's images/s with the input pipeline delivering training batches to the GPU at its full
// rate beside it (sharing the host cores, PCIe and the GPU), and the rate it delivered. The batches are
// counted and dropped; the step keeps its synthetic input.
#pragma once
#include <atomic>
#include <cstdint>
#include <exception>
#include <string>
#include <thread>
#include <vector>

#include "data/loader.h"

namespace mo::bench {

// The training loader of a recipe with the defaults (tools/engine/train_config.h: RandomResizedCrop `img`,
// RandAugment rand-m9-mstd0.5-inc1, mixup/cutmix, label smoothing, erasing; channels-last, `dtype`), then
// `sets` (recipe keys, "data.prefetch=8") in order.
data::LoaderConfig drain_config(const std::string& root, int batch, int img, int workers, const std::string& decoder,
                                DType dtype, bool cuda, const std::vector<std::string>& sets = {});
// What a loader did between two stats() (the timed steps): one line for the report.
std::string describe_loader(const data::LoaderStats& a, const data::LoaderStats& b, int workers, double seconds);

class LoaderDrain {
 public:
  explicit LoaderDrain(const data::LoaderConfig& cfg);  // starts draining at once
  ~LoaderDrain();                                         // stops and joins
  LoaderDrain(const LoaderDrain&) = delete;
  LoaderDrain& operator=(const LoaderDrain&) = delete;
  int64_t images() const;  // delivered so far; rethrows what stopped the thread
  data::LoaderStats stats() const { return loader_.stats(); }
  const char* decoder() const { return loader_.decoder(); }

 private:
  data::Loader loader_;
  std::atomic<int64_t> images_{0};
  std::atomic<bool> stop_{false};
  std::exception_ptr error_;
  std::atomic<bool> failed_{false};
  std::thread thread_;
};

}  // namespace mo::bench
