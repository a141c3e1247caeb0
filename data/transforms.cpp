// transforms.cpp: train / eval transforms (see transforms.h).
#include "data/transforms.h"

#include <cmath>
#include <cstring>

#include "autograd/check.h"
#include "data/image_decode.h"

namespace mo::data {
namespace {

// Opens the image in data[0, n): a JPEG reads only its header (its windows are decoded later); PNG and
// WebP are decoded whole into ws.full. W, H: the full size. Times the header (PNG, WebP: the decode).
bool open_image(const uint8_t* data, size_t n, Workspace& ws, StageClock& clock, int& W, int& H, std::string& err) {
  const ImageFormat f = sniff_image_format(data, n);
  ws.full_open = false;
  if (f == ImageFormat::jpeg) {
    if (!clock.lap(Stage::header, ws.decoder.open(data, n))) {
      err = ws.decoder.error();
      return false;
    }
    W = ws.decoder.width(), H = ws.decoder.height();
    return true;
  }
  bool ok = false;
  if (f == ImageFormat::png) ok = decode_png(data, n, ws.decoder.max_pixels(), ws.full, err);
  else if (f == ImageFormat::webp) ok = decode_webp(data, n, ws.decoder.max_pixels(), ws.full, err);
  else err = unknown_format_error(data, n);
  clock.lap(Stage::decode);
  if (!ok) return false;
  ws.full_open = true;
  W = ws.full.w(), H = ws.full.h();
  return true;
}

// The window [x, x+w) x [y, y+h) of the opened image, as JpegDecoder::decode gives it (a view of
// ws.full at full scale for PNG and WebP).
bool decode_window(Workspace& ws, int x, int y, int w, int h, int min_w, int min_h, DecodedWindow& out,
                   std::string& err) {
  if (!ws.full_open) {
    if (ws.decoder.decode(x, y, w, h, min_w, min_h, out)) return true;
    err = ws.decoder.error();
    return false;
  }
  MO_CHECK(x >= 0 && y >= 0 && w > 0 && h > 0 && x + w <= ws.full.w() && y + h <= ws.full.h(),
           "decode_window: window ({}, {}, {}x{}) outside the {}x{} image", x, y, w, h, ws.full.w(), ws.full.h());
  const int64_t stride = int64_t(ws.full.w()) * 3;
  out.view = {ws.full.data() + y * stride + int64_t(x) * 3, w, h, stride};
  out.box[0] = out.box[1] = 0;
  out.box[2] = static_cast<float>(w);
  out.box[3] = static_cast<float>(h);
  out.scale_denom = 1;
  return true;
}

}  // namespace

CropWindow random_resized_crop_window(int width, int height, const TrainTransformConfig& cfg, Rng& rng) {
  const double area = static_cast<double>(width) * height;
  const double log_r0 = std::log(cfg.ratio_min), log_r1 = std::log(cfg.ratio_max);
  for (int attempt = 0; attempt < 10; ++attempt) {
    double target_area = area * rng.uniform(cfg.scale_min, cfg.scale_max);
    double aspect = std::exp(rng.uniform(log_r0, log_r1));
    int w = static_cast<int>(std::nearbyint(std::sqrt(target_area * aspect)));  // Python round: half to even
    int h = static_cast<int>(std::nearbyint(std::sqrt(target_area / aspect)));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      int y = static_cast<int>(rng.randint(0, height - h));
      int x = static_cast<int>(rng.randint(0, width - w));
      return {x, y, w, h};
    }
  }
  // Fallback: the central crop with the ratio clamped into range.
  const double in_ratio = static_cast<double>(width) / height;
  int w = width, h = height;
  if (in_ratio < std::min(cfg.ratio_min, cfg.ratio_max)) {
    h = static_cast<int>(std::nearbyint(w / std::min(cfg.ratio_min, cfg.ratio_max)));
  } else if (in_ratio > std::max(cfg.ratio_min, cfg.ratio_max)) {
    w = static_cast<int>(std::nearbyint(h * std::max(cfg.ratio_min, cfg.ratio_max)));
  }
  return {(width - w) / 2, (height - h) / 2, w, h};
}

void resize_shorter_side(int width, int height, int shorter, int& out_w, int& out_h) {
  if (width <= height) {
    out_w = shorter;
    out_h = static_cast<int>(static_cast<double>(shorter) * height / width);
  } else {
    out_h = shorter;
    out_w = static_cast<int>(static_cast<double>(shorter) * width / height);
  }
}

TrainTransform::TrainTransform(TrainTransformConfig cfg) : cfg_(std::move(cfg)) {
  MO_CHECK(cfg_.size > 0, "train transform: size {} must be positive", cfg_.size);
  MO_CHECK(cfg_.scale_min > 0 && cfg_.scale_min <= cfg_.scale_max && cfg_.ratio_min > 0 && cfg_.ratio_max > 0,
           "train transform: bad scale ({}, {}) or ratio ({}, {})", cfg_.scale_min, cfg_.scale_max, cfg_.ratio_min,
           cfg_.ratio_max);
  if (!cfg_.auto_augment.empty()) {
    ra_ = RandAugmentConfig::parse(cfg_.auto_augment);
    ra_->translate_const = static_cast<int>(cfg_.size * 0.45);  // timm: int(img_size_min * 0.45)
    if (cfg_.interpolation) ra_->interpolation = cfg_.interpolation;
  }
}

bool TrainTransform::draw(const uint8_t* data, size_t n, Rng& rng, Workspace& ws, TrainDraw& d,
                          std::string& err) const {
  StageClock clock(ws.times);
  if (!open_image(data, n, ws, clock, d.width, d.height, err)) return false;
  d.win = random_resized_crop_window(d.width, d.height, cfg_, rng);
  d.interp = cfg_.interpolation ? *cfg_.interpolation : (rng.uniform() < 0.5 ? Interp::bilinear : Interp::bicubic);
  d.flip = cfg_.hflip > 0 && rng.uniform() < cfg_.hflip;
  d.gpu = !ws.full_open && ws.decoder.gpu_decodable();
  return true;
}

bool TrainTransform::operator()(const uint8_t* data, size_t n, Rng& rng, Workspace& ws, const ImageView& out,
                                std::string& err) const {
  TrainDraw d;
  return draw(data, n, rng, ws, d, err) && decode_and_transform(d.win, d.interp, d.flip, &rng, ws, out, err);
}

void TrainTransform::augment(const ImageView& img, Rng& rng, Workspace& ws) const {
  if (!ra_) return;
  StageClock clock(ws.times);
  ws.img.resize(img.w, img.h);
  for (int y = 0; y < img.h; ++y) std::memcpy(ws.img.row(y), img.row(y), static_cast<size_t>(img.w) * 3);
  mo::data::rand_augment(ws.img, *ra_, rng, ws.scratch);
  for (int y = 0; y < img.h; ++y) std::memcpy(img.row(y), ws.img.row(y), static_cast<size_t>(img.w) * 3);
  clock.lap(Stage::augment);
}

bool TrainTransform::apply_fixed(const uint8_t* data, size_t n, const CropWindow* window, Interp interp, bool flip,
                                 Rng* ra_rng, Workspace& ws, const ImageView& out, std::string& err) const {
  int W = 0, H = 0;
  StageClock clock(ws.times);
  if (!open_image(data, n, ws, clock, W, H, err)) return false;
  CropWindow win = window ? *window : CropWindow{0, 0, W, H};
  return decode_and_transform(win, interp, flip, ra_rng, ws, out, err);
}

bool TrainTransform::decode_and_transform(const CropWindow& win, Interp interp, bool flip, Rng* ra_rng, Workspace& ws,
                                          const ImageView& out, std::string& err) const {
  MO_CHECK(out.w == cfg_.size && out.h == cfg_.size, "train transform: output {}x{}, expected {}x{}", out.w, out.h,
           cfg_.size, cfg_.size);
  StageClock clock(ws.times);
  DecodedWindow dec;
  const int need = cfg_.dct_scaling ? cfg_.size : 0;
  if (!clock.lap(Stage::decode, decode_window(ws, win.x, win.y, win.w, win.h, need, need, dec, err))) return false;
  const bool augment = ra_ && ra_rng;
  if (!augment) {
    resample(dec.view, dec.box, interp, out, flip);
    return clock.lap(Stage::resize);
  }
  ws.img.resize(cfg_.size, cfg_.size);
  resample(dec.view, dec.box, interp, ws.img.view(), flip);
  clock.lap(Stage::resize);
  mo::data::rand_augment(ws.img, *ra_, *ra_rng, ws.scratch);
  for (int y = 0; y < out.h; ++y) std::memcpy(out.row(y), ws.img.row(y), static_cast<size_t>(out.w) * 3);
  return clock.lap(Stage::augment);
}

EvalTransform::EvalTransform(EvalTransformConfig cfg) : cfg_(cfg) {
  MO_CHECK(cfg_.size > 0 && cfg_.crop_pct > 0 && cfg_.crop_pct <= 1.0, "eval transform: size {} / crop_pct {} invalid",
           cfg_.size, cfg_.crop_pct);
}

bool EvalTransform::operator()(const uint8_t* data, size_t n, Workspace& ws, const ImageView& out,
                               std::string& err) const {
  MO_CHECK(out.w == cfg_.size && out.h == cfg_.size, "eval transform: output {}x{}, expected {}x{}", out.w, out.h,
           cfg_.size, cfg_.size);
  int W = 0, H = 0;
  StageClock clock(ws.times);
  if (!open_image(data, n, ws, clock, W, H, err)) return false;
  const int scale_size = static_cast<int>(std::floor(cfg_.size / cfg_.crop_pct));
  int rw = 0, rh = 0;
  resize_shorter_side(W, H, scale_size, rw, rh);
  DecodedWindow dec;
  const bool scaled = cfg_.dct_scaling;
  if (!clock.lap(Stage::decode, decode_window(ws, 0, 0, W, H, scaled ? rw : 0, scaled ? rh : 0, dec, err))) return false;
  // torchvision CenterCrop: int(round((resized - crop) / 2.0)), Python rounding (half to even).
  ResampleWindow win{rw, rh, static_cast<int>(std::nearbyint((rw - cfg_.size) / 2.0)),
                     static_cast<int>(std::nearbyint((rh - cfg_.size) / 2.0))};
  MO_CHECK(win.x0 >= 0 && win.y0 >= 0, "eval transform: resized {}x{} smaller than the {} crop", rw, rh, cfg_.size);
  resample(dec.view, dec.box, cfg_.interpolation, out, false, &win);
  return clock.lap(Stage::resize);
}

}  // namespace mo::data
