// transforms.h: the per-image training and evaluation transforms, from the bytes of a JPEG, PNG or WebP
// file to a size x size uint8 RGB image written straight into a batch slot.
//  - train (timm's recipe, mambaout.md §3): RandomResizedCrop (torchvision get_params semantics: scale,
//    ratio, 10 attempts, centre fallback) with bilinear or bicubic at random, decoded as a window at a
//    DCT scale; horizontal flip fused into the resize; RandAugment.
//  - eval (§4): resize the shorter side to floor(size / crop_pct) with PIL's antialiased bicubic, centre
//    crop (torchvision rounding); only the cropped window of the resize is computed.
// Normalisation, mixup/cutmix and random erasing happen later on whole batches (mixup.h, normalize.h).
#pragma once
#include <optional>
#include <string>

#include "data/jpeg.h"
#include "data/rand_augment.h"
#include "data/random.h"
#include "data/resample.h"
#include "data/stage_times.h"

namespace mo::data {

struct TrainTransformConfig {
  int size = 224;
  double scale_min = 0.08, scale_max = 1.0;
  double ratio_min = 3.0 / 4.0, ratio_max = 4.0 / 3.0;
  std::optional<Interp> interpolation;  // unset: bilinear or bicubic at random (timm 'random')
  double hflip = 0.5;
  std::string auto_augment = "rand-m9-mstd0.5-inc1";  // timm policy string; empty: no RandAugment
  bool dct_scaling = true;  // decode at 1/2, 1/4, 1/8 when the crop stays >= size
};

struct EvalTransformConfig {
  int size = 224;
  double crop_pct = 1.0;
  Interp interpolation = Interp::bicubic;
  bool dct_scaling = false;  // off: bit-exact with PIL; on: faster on large images
};

struct CropWindow {
  int x = 0, y = 0, w = 0, h = 0;  // left, top, width, height in the full image
};
// torchvision RandomResizedCrop.get_params on a width x height image.
CropWindow random_resized_crop_window(int width, int height, const TrainTransformConfig& cfg, Rng& rng);

// The random draws of one training sample, before any pixel is decoded: the crop window in the full
// image, the interpolation and the flip. `gpu` says whether the GPU decoder may take the file (a
// sequential YCbCr JPEG: JpegDecoder::gpu_decodable); the rng is left where RandAugment goes on.
struct TrainDraw {
  int width = 0, height = 0;  // the full image
  CropWindow win;
  Interp interp = Interp::bilinear;
  bool flip = false;
  bool gpu = false;
};

// Per-thread state: the decoder and reusable image buffers. JPEG decodes only the window it needs (at a
// DCT scale); PNG and WebP (image_decode.h) are decoded whole into `full` and the window is a view of it.
// The JPEG decoder's pixel limit applies to all three. `times` collects the time of each stage the
// transforms run (header, decode, resize, augment; stage_times.h).
struct Workspace {
  JpegDecoder decoder;
  StageTimes times;
  Image img, scratch;
  Image full;
  bool full_open = false;  // the last image opened was PNG or WebP (in `full`)
};

class TrainTransform {
 public:
  explicit TrainTransform(TrainTransformConfig cfg);
  const TrainTransformConfig& config() const { return cfg_; }
  const std::optional<RandAugmentConfig>& rand_augment() const { return ra_; }
  // Image file bytes -> out (size x size). False with `err` set when the file cannot be decoded.
  bool operator()(const uint8_t* data, size_t n, Rng& rng, Workspace& ws, const ImageView& out, std::string& err) const;
  // operator() in two halves, for the GPU decoder (gpu_jpeg.h): draw() opens the image (a JPEG's header
  // only) and makes the draws operator() makes, in the same order; augment() then runs RandAugment, with
  // the same rng, on the crop another decoder made. draw + apply_fixed(&d.win, d.interp, d.flip, &rng)
  // gives operator()'s bytes.
  bool draw(const uint8_t* data, size_t n, Rng& rng, Workspace& ws, TrainDraw& d, std::string& err) const;
  void augment(const ImageView& img, Rng& rng, Workspace& ws) const;
  // The same with the crop window, interpolation and flip given (parity tests and benchmarks).
  bool apply_fixed(const uint8_t* data, size_t n, const CropWindow* window, Interp interp, bool flip, Rng* ra_rng,
                   Workspace& ws, const ImageView& out, std::string& err) const;

 private:
  bool decode_and_transform(const CropWindow& win, Interp interp, bool flip, Rng* ra_rng, Workspace& ws,
                            const ImageView& out, std::string& err) const;
  TrainTransformConfig cfg_;
  std::optional<RandAugmentConfig> ra_;
};

class EvalTransform {
 public:
  explicit EvalTransform(EvalTransformConfig cfg);
  const EvalTransformConfig& config() const { return cfg_; }
  bool operator()(const uint8_t* data, size_t n, Workspace& ws, const ImageView& out, std::string& err) const;

 private:
  EvalTransformConfig cfg_;
};

// The size torchvision's Resize(int) gives a width x height image (shorter side -> `shorter`).
void resize_shorter_side(int width, int height, int shorter, int& out_w, int& out_h);

}  // namespace mo::data
