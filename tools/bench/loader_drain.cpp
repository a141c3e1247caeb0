// loader_drain.cpp: see loader_drain.h.
#include "tools/bench/loader_drain.h"

#include <memory>

#include "autograd/check.h"
#include "autograd/cuda_allocator.h"

namespace mo::bench {

data::LoaderConfig drain_config(const std::string& root, int batch, int img, int workers, const std::string& decoder,
                                DType dtype, bool cuda) {
  data::LoaderConfig c;
  c.root = root;
  c.training = true;
  c.batch_size = batch;
  c.num_threads = workers;
  c.train.size = img;
  c.mixup.mixup_alpha = 0.8;
  c.mixup.cutmix_alpha = 1.0;
  c.mixup.label_smoothing = 0.1;
  c.erase.prob = 0.25;
  c.dtype = dtype;
  c.channels_last = true;
  c.use_cuda = cuda;
  MO_CHECK(decoder == "cpu" || decoder == "gpu", "--loader-decoder: '{}' is not cpu or gpu", decoder);
  c.decoder = decoder == "gpu" ? data::DecodeOn::gpu : data::DecodeOn::cpu;
  return c;
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
