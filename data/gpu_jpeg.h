// gpu_jpeg.h: the GPU half of the training transform (recipe key data.decoder: gpu), after DALI's "mixed"
// decoder. The host reads each JPEG's header and makes the sample's random draws (TrainTransform::draw:
// the same crop window, interpolation and flip as the CPU path for the same seed); the device decodes a
// batch of files with nvJPEG (the hardware JPEG engine where nvjpegCreateEx accepts
// NVJPEG_BACKEND_HARDWARE, else the GPU-hybrid backend; batched API), then two kernels crop each window,
// resize it to size x size (PIL's separable filter, antialiased when downscaling: bilinear or bicubic
// support scaled by the factor, rounded to 8 bits between the passes as PIL does; float weights, so
// within a level or two of PIL, not bit-exact) with the flip fused in, and the uint8 HWC crops are copied
// back to host memory, where RandAugment, mixup/cutmix and the rest go on as on the CPU path (loader.h).
// A file nvJPEG refuses or cannot decode is reported, never thrown: the caller decodes it on the CPU.
// CUDA and nvJPEG failures of the device itself throw mo::Error naming the call, source file and line.
// Built with nvJPEG only (gpu_jpeg.cu, MO_WITH_NVJPEG); elsewhere gpu_jpeg_stub.cpp refuses to start.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "data/image.h"
#include "data/resample.h"

namespace mo::data {

// This build of mo has the nvJPEG decoder, and a GPU is present.
bool gpu_jpeg_built();
bool gpu_jpeg_available();

// One image of a batch: the whole JPEG file, the window in full-image pixels, the filter and the flip.
struct GpuJob {
  const uint8_t* data = nullptr;
  size_t size = 0;
  int x = 0, y = 0, w = 0, h = 0;
  Interp interp = Interp::bilinear;
  bool flip = false;
};

// Where a decoder's batches spent their time, summed over run() calls, in seconds. queued: waiting for a
// free context (all `contexts` batches in flight); host: parsing the headers and nvJPEG's host part of the
// batch; wait: the calling thread blocked until the crops were back. On the device, between events on the
// batch's stream: decode (nvJPEG, from the batch's start on its stream), resize (the crop kernels), copy
// (back to the host). Their sum against host + wait says whether the batch waited on the GPU's queue.
struct GpuDecodeTimes {
  int64_t batches = 0, images = 0;
  double queued_s = 0, host_s = 0, wait_s = 0, decode_s = 0, resize_s = 0, copy_s = 0;
};
// The batches between two times(), for logs: "12 GPU batches of 256, ms each: queued .., host .., ..."
// ("" when there were none).
inline std::string describe(const GpuDecodeTimes& a, const GpuDecodeTimes& b) {
  const double n = static_cast<double>(b.batches - a.batches);
  if (n <= 0) return "";
  auto ms = [&](double x, double x0) { return 1e3 * (x - x0) / n; };
  return fmt::format("{:.0f} GPU batches of {:.0f}, ms each: queued {:.1f}, host {:.1f}, waited {:.1f} (on the GPU: "
                     "decode {:.1f}, resize {:.1f}, copy {:.1f})", n, static_cast<double>(b.images - a.images) / n,
                     ms(b.queued_s, a.queued_s), ms(b.host_s, a.host_s), ms(b.wait_s, a.wait_s),
                     ms(b.decode_s, a.decode_s), ms(b.resize_s, a.resize_s), ms(b.copy_s, a.copy_s));
}

class GpuJpegDecoder {
 public:
  // Decodes on cuda:`device` into size x size crops. `contexts` batches may be in flight at once (each
  // its own nvJPEG state, stream and buffers; run() from several threads shares them); high_priority: its
  // streams at the device's highest priority (else the default, the training step's). use_hardware
  // false: the GPU-hybrid backend even where the hardware engine is there (benchmarks).
  GpuJpegDecoder(int device, int size, int contexts = 2, bool use_hardware = true, bool high_priority = true);
  ~GpuJpegDecoder();
  GpuJpegDecoder(const GpuJpegDecoder&) = delete;
  GpuJpegDecoder& operator=(const GpuJpegDecoder&) = delete;
  // Job i -> out + i * size * size * 3 (host memory, ideally pinned). ok[i] = 0 with errors[i] set where
  // the GPU did not decode it (its slot of `out` then holds nothing useful).
  void run(const GpuJob* jobs, int n, uint8_t* out, std::vector<char>& ok, std::vector<std::string>& errors);
  // One whole image at full size (tests: the decoded pixels against libjpeg-turbo's). False with `err`.
  bool decode_full(const uint8_t* data, size_t n, Image& out, std::string& err);
  bool hardware() const;   // the hardware JPEG engine (else the GPU-hybrid backend)
  GpuDecodeTimes times() const;  // so far, over all threads' run() calls
  int size() const { return size_; }

 private:
  void start_on(int device, int contexts, bool use_hardware, bool high_priority);  // the constructor's CUDA and nvJPEG part
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int size_ = 0;
};

}  // namespace mo::data
