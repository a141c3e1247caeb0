// loader.h: the input pipeline's front door. A Loader owns a pool of worker threads that decode and
// transform samples into a bounded ring of uint8 NHWC batch slots (pinned when a GPU is present);
// the worker that completes a batch applies mixup/cutmix and draws the erase boxes. next() uploads
// a ready batch (one async copy) and normalises + erases it on the GPU, or on the CPU twin without
// one, returning images [B, 3, H, W] (or NHWC) float32/bf16, soft targets [B, C] float32 and labels
// [B] int64. Batches are deterministic in (seed, epoch, rank, batch index) whatever the thread count;
// state()/start_epoch(epoch, batch) resume mid-epoch exactly. Unreadable samples (and files over the size
// or pixel limits, or no longer regular files) are replaced by a deterministic stand-in, counted and named
// on stderr. When the worker threads cannot all be started the constructor throws, saying how many.
// stats() gives cumulative counters for the training log: how long the consumer waited for data against
// how busy the workers were, per stage.
// decoder gpu (gpu_jpeg.h, training only): a slot's samples are read and drawn by the workers (header,
// crop, interpolation, flip: TrainTransform::draw), the slot's JPEGs are decoded, cropped, resized and
// flipped on the GPU as one nvJPEG batch by the worker that drew its last sample, and the workers then
// run RandAugment on the CPU on the crops (with the rng where draw() left it, so the same seed gives the
// same crops and ops as the CPU path). Files the GPU does not take (PNG, WebP, progressive, grayscale,
// CMYK, no EOI, refused by nvJPEG) go the CPU path whole, counted in stats().gpu_fallbacks.
// synthetic: the folder gives the labels and the epoch's length, the pixels are noise (no file is read).
//
//   LoaderConfig cfg;  cfg.root = root;  cfg.batch_size = 128;  ...   (tools/engine/loaders.cpp fills it
//   Loader train(cfg);                                                 from a recipe)
//   train.start_epoch(epoch);  Batch b;  while (train.next(b)) { ... b.images, b.targets ... }
#pragma once
#include <array>
#include <memory>
#include <string>

#include "autograd/tensor.h"
#include "data/image_folder.h"
#include "data/gpu_jpeg.h"
#include "data/jpeg.h"
#include "data/mixup.h"
#include "data/normalize.h"
#include "data/stage_times.h"
#include "data/transforms.h"

namespace mo::data {

// Where training JPEGs are decoded: cpu (libjpeg-turbo, the reference), gpu (nvJPEG; an error where this
// build or machine has none), automatic (gpu where built with nvJPEG and the loader is on a GPU, else cpu).
enum class DecodeOn : uint8_t { cpu, gpu, automatic };

struct LoaderConfig {
  std::string root;          // dataset root: root/<split>/<class>/*.jpg
  std::string split;         // default: "train" when training, else "val"
  bool training = true;      // train transform + shuffle + drop_last + mixup + erasing; else eval
  int batch_size = 128;      // per rank
  int num_threads = 4;       // worker threads
  int worker_nice = 0;       // 0..19, added to the workers' Linux nice value (at most 19): above 0 they leave
                             // a busy core to the training thread first (16 workers on 16 cores slow a
                             // host-bound step); an increment, so it never needs privileges
  int prefetch_batches = 4;  // batch slots in the ring
  int rank = 0, world_size = 1;
  uint64_t seed = 42;
  TrainTransformConfig train;
  EvalTransformConfig eval;
  MixupConfig mixup;  // training only
  EraseConfig erase;  // training only
  DType dtype = DType::f32;
  bool channels_last = false;
  bool use_cuda = true;  // output on cuda:`device` when a GPU is present, else on the CPU
  int device = 0;
  int64_t max_pixels = kDefaultMaxPixels;         // JPEGs declaring more count as bad input
  int64_t max_file_bytes = kDefaultMaxFileBytes;  // larger files count as bad input (never read)
  int max_warnings = 20;                 // bad-input lines printed before going quiet
  bool use_index_cache = true;
  DecodeOn decoder = DecodeOn::cpu;  // training only (eval decodes on the CPU)
  int gpu_batches = 2;               // decoder gpu: slots decoding on the GPU at once (its contexts)
  bool gpu_high_priority = true;     // decoder gpu: its CUDA streams at the highest priority (else the default)
  bool synthetic = false;  // no file is read: each sample is random pixels (deterministic in seed, epoch and
                           // position), its label the folder's, then mixup, erasing and the upload as
                           // usual; the pipeline's decoding and transforms taken out, for timing the rest
};

struct Batch {
  Tensor images;   // (B, 3, H, W) or (B, H, W, 3), float32 / bf16
  Tensor targets;  // (B, num_classes) float32, mixup/cutmix + label smoothing (eval: one-hot)
  Tensor labels;   // (B,) int64, the unmixed labels
  int64_t epoch = 0, index = 0;  // which batch of which epoch
  double lam = 1.0;              // mixup/cutmix lambda of this batch
};

// Cumulative since the Loader was made, over all epochs (wall-clock seconds, steady clock). wait_s large
// against the step time means the trainer is input-bound; stage_s says where the workers' time goes.
struct LoaderStats {
  int64_t batches = 0;  // returned by next()
  int64_t samples = 0;  // decoded and transformed by the workers (a replaced file counts once)
  double wait_s = 0;    // next() blocked on a batch that was not ready yet
  double deliver_s = 0; // next() once the batch was ready: the upload and normalisation (enqueue on a GPU)
  double busy_s = 0;    // worker threads on samples and batches, summed over the threads
  // By stage (stage_name()): read .. augment per sample and mixup per batch are the workers' (their sum
  // is at most busy_s); normalize is the consumer's part of deliver_s.
  std::array<double, kNumStages> stage_s{};
  int64_t gpu_decoded = 0, gpu_fallbacks = 0;  // decoder gpu: samples the GPU decoded / the CPU did instead
  GpuDecodeTimes gpu_times;                    // decoder gpu: where its batches' time went
  double stage(Stage s) const { return stage_s[static_cast<size_t>(s)]; }
};

struct LoaderState {
  int64_t epoch = 0;
  int64_t next_batch = 0;  // the batch next() returns next
};

class Loader {
 public:
  explicit Loader(LoaderConfig cfg);
  Loader(LoaderConfig cfg, std::shared_ptr<const ImageFolder> dataset);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  // Starts (or restarts) an epoch at batch `first_batch` (resume). next() starts epoch 0 if never called.
  void start_epoch(int64_t epoch, int64_t first_batch = 0);
  // The next batch of the epoch; false when the epoch is done.
  bool next(Batch& out);
  LoaderState state() const;
  int64_t batches_per_epoch() const;
  int64_t samples_per_rank() const;
  int64_t bad_samples() const;  // replaced so far (all epochs)
  LoaderStats stats() const;
  const ImageFolder& dataset() const;
  const LoaderConfig& config() const;
  Device device() const;  // where batches are returned
  const char* decoder() const;  // "cpu", "gpu (nvJPEG hardware)", "gpu (nvJPEG GPU-hybrid)" or "synthetic"

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mo::data
