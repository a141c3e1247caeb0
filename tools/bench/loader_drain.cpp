// loader_drain.cpp: see loader_drain.h.
#include "tools/bench/loader_drain.h"

#ifdef MO_WITH_CUDA
#include <cuda_runtime.h>

#include "autograd/cuda_allocator.h"
#endif

#include "autograd/check.h"

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
  thread_ = std::thread([this] {
    try {
#ifdef MO_WITH_CUDA
      cudaStream_t s = nullptr;  // the loader's normalisation off the step's stream, as a side stream would be
      if (loader_.device().is_cuda()) {
        MO_CHECK(cudaSetDevice(loader_.device().index) == cudaSuccess &&
                     cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess,
                 "mo_bench --loader: cannot create a CUDA stream");
        cuda_set_current_stream(s);
      }
#endif
      data::Batch b;
      for (int64_t epoch = 0; !stop_; ++epoch) {
        loader_.start_epoch(epoch);
        while (!stop_ && loader_.next(b)) images_ += b.images.size(0);
      }
      b = {};
#ifdef MO_WITH_CUDA
      if (s) cudaStreamSynchronize(s);  // s stays: its freed blocks may still be cached against it
#endif
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
