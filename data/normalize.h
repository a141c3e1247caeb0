// normalize.h: the last step of the input pipeline, on whole batches: uint8 (B, H, W, 3) images ->
// (x - 255 mean) / (255 std) as float32 or bfloat16, NCHW or NHWC, with timm's random erasing (mode
// 'pixel') applied on the normalised values: inside a sample's box every value is an N(0, 1) draw.
// The box of each sample is drawn on the host (draw_erase_box, timm RandomErasing semantics); the
// noise is Philox keyed by (seed, the sample's stream, (c * H + y) * W + x), so the CUDA kernel
// (normalize.cu) and its CPU twin (normalize.cpp) produce the same numbers.
#pragma once
#include <cstdint>

#include "autograd/tensor.h"
#include "data/random.h"

namespace mo::data {

struct EraseConfig {
  double prob = 0.25;
  double min_area = 0.02, max_area = 1.0 / 3.0;
  double min_aspect = 0.3, max_aspect = 1.0 / 0.3;
};

struct NormalizeSpec {
  float mean[3] = {0.485f * 255.0f, 0.456f * 255.0f, 0.406f * 255.0f};  // in 0..255 units
  float std[3] = {0.229f * 255.0f, 0.224f * 255.0f, 0.225f * 255.0f};
  DType dtype = DType::f32;  // f32 or bf16
  bool channels_last = false;
};
NormalizeSpec imagenet_normalize(DType dtype = DType::f32, bool channels_last = false);

// Per-sample metadata, one int64 row of kMetaCols: erase box top, left, height, width (height 0: no
// erasing) and the Philox stream of its noise.
constexpr int kMetaCols = 5;
struct EraseBox {
  int64_t top = 0, left = 0, h = 0, w = 0;
};
// timm RandomErasing._erase for one sample (count 1): with probability prob, up to 10 tries.
EraseBox draw_erase_box(const EraseConfig& cfg, int height, int width, Rng& rng);

// images: uint8 (B, H, W, 3); meta: int64 (B, kMetaCols), same device. Returns the normalised batch
// on that device: (B, 3, H, W) or (B, H, W, 3) when spec.channels_last.
Tensor normalize_erase(const Tensor& images, const Tensor& meta, uint64_t seed, const NormalizeSpec& spec);

// The two implementations behind it (out allocated by the caller with the result's shape and dtype).
void normalize_erase_cpu(const Tensor& images, const Tensor& meta, uint64_t seed, const NormalizeSpec& spec, Tensor& out);
void normalize_erase_cuda(const Tensor& images, const Tensor& meta, uint64_t seed, const NormalizeSpec& spec, Tensor& out);

}  // namespace mo::data
