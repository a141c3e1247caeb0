// loader_drain.cpp: see loader_drain.h.
#include "tools/bench/loader_drain.h"

#include <memory>

#include "autograd/check.h"
#include "autograd/cuda_allocator.h"
#include "tools/engine/config_schema.h"
#include "tools/engine/loaders.h"

namespace mo::bench {

data::LoaderConfig drain_config(const std::string& root, int batch, int img, int workers, const std::string& decoder,
                                DType dtype, bool cuda, const std::vector<std::string>& sets) {
  tools::TrainConfig c;  // the recipe's defaults: the official training transform
  c.data.root = root;
  c.data.img_size = img;
  c.data.workers = workers;
  c.data.decoder = decoder;
  c.train.batch_size = batch;
  tools::ConfigSchema schema = tools::make_schema(c);
  for (const std::string& s : sets) schema.set(s);
  c.validate();
  return tools::train_loader_config(c, 0, 1, cuda ? Device::cuda(0) : Device::cpu(), dtype);
}

std::string describe_loader(const data::LoaderStats& a, const data::LoaderStats& b, int workers, double seconds) {
  std::string s = fmt::format("workers busy {:.0f}% of {} threads", 100.0 * (b.busy_s - a.busy_s) / (workers * seconds),
                              workers);
  const std::string gpu = data::describe(a.gpu_times, b.gpu_times);
  return gpu.empty() ? s : s + "; " + gpu;
}

LoaderDrain::LoaderDrain(const data::LoaderConfig& cfg) : loader_(cfg) {
  MO_CHECK(loader_.batches_per_epoch() > 0, "--loader {}: {} training images, fewer than one batch of {}", cfg.root,
           loader_.samples_per_rank(), cfg.batch_size);
  thread_ = std::thread([this] {
    try {
      std::unique_ptr<CudaOwnStream> own;  // the loader's normalisation off the step's stream
      if (loader_.device().is_cuda()) own = std::make_unique<CudaOwnStream>(loader_.device().index);
      data::Batch b;
      for (int64_t epoch = 0; !stop_; ++epoch) {
        loader_.start_epoch(epoch);
        while (!stop_ && loader_.next(b)) images_ += b.images.size(0);
      }
    } catch (...) {
      error_ = std::current_exception();
      failed_ = true;
    }
  });
}

LoaderDrain::~LoaderDrain() {
  stop_ = true;
  thread_.join();
}

int64_t LoaderDrain::images() const {
  if (failed_) std::rethrow_exception(error_);
  return images_.load();
}

}  // namespace mo::bench
