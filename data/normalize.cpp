// normalize.cpp: erase boxes, the device dispatch, and the CPU twin of normalize.cu.
#include "data/normalize.h"

#include <cmath>

#include "autograd/check.h"
#include "autograd/cpu_isa.h"

namespace mo::data {

NormalizeSpec imagenet_normalize(DType dtype, bool channels_last) {
  NormalizeSpec s;
  s.dtype = dtype;
  s.channels_last = channels_last;
  return s;
}

EraseBox draw_erase_box(const EraseConfig& cfg, int height, int width, Rng& rng) {
  EraseBox b;
  if (cfg.prob <= 0 || rng.uniform() > cfg.prob) return b;
  const double area = static_cast<double>(height) * width;
  const double la = std::log(cfg.min_aspect), lb = std::log(cfg.max_aspect);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target = rng.uniform(cfg.min_area, cfg.max_area) * area;
    const double aspect = std::exp(rng.uniform(la, lb));
    const int h = static_cast<int>(std::nearbyint(std::sqrt(target * aspect)));
    const int w = static_cast<int>(std::nearbyint(std::sqrt(target / aspect)));
    if (w < width && h < height) {
      b.top = rng.randint(0, height - h);
      b.left = rng.randint(0, width - w);
      b.h = h;
      b.w = w;
      return b;
    }
  }
  return b;
}

namespace {


// One sample's values, (x - mean) / std.
template <typename T>
MO_ALWAYS_INLINE void normalize_values(const uint8_t* in, int64_t plane, const NormalizeSpec& s, T* o) {
  if (s.channels_last) {
    for (int64_t i = 0; i < plane * 3; i += 3)
      for (int c = 0; c < 3; ++c) o[i + c] = T((static_cast<float>(in[i + c]) - s.mean[c]) / s.std[c]);
  } else {
    for (int c = 0; c < 3; ++c) {
      const float mean = s.mean[c], std = s.std[c];
      T* oc = o + c * plane;
      for (int64_t p = 0; p < plane; ++p) oc[p] = T((static_cast<float>(in[p * 3 + c]) - mean) / std);
    }
  }
}

// One sample: normalise every value, then overwrite the erase box with its noise.
template <typename T>
MO_ALWAYS_INLINE void normalize_sample(const uint8_t* in, const int64_t* m, int H, int W, uint64_t seed, const NormalizeSpec& s, T* o) {
  const int64_t plane = static_cast<int64_t>(H) * W;
  normalize_values(in, plane, s, o);
  if (m[2] <= 0) return;
  // philox_normal(seed, stream, c * plane + p) for each value of the box; values 2j and 2j + 1 come
  // from the two halves of Philox block j, computed once for both.
  const uint64_t stream = static_cast<uint64_t>(m[4]);
  for (int c = 0; c < 3; ++c)
    for (int64_t y = m[0]; y < m[0] + m[2]; ++y) {
      uint64_t i = static_cast<uint64_t>(c * plane + y * W + m[1]);
      const uint64_t end = i + static_cast<uint64_t>(m[3]);
      while (i < end) {
        const Philox4 b = philox_block(seed, stream, i >> 1);
        for (int h = static_cast<int>(i & 1); h < 2 && i < end; ++h, ++i) {
          const float u1 = ((b.v[2 * h] >> 8) + 1) * (1.0f / 16777217.0f);  // as philox_normal
          const float u2 = philox_u32_to_unit(b.v[2 * h + 1]);
          const float v = sqrtf(-2.0f * logf(u1)) * cosf(6.28318530717958647692f * u2);
          const int64_t p = static_cast<int64_t>(i) - c * plane;
          o[s.channels_last ? p * 3 + c : static_cast<int64_t>(i)] = T(v);
        }
      }
    }
}

// the same body compiled for AVX2 (no FMA: the values stay bit-identical) and for baseline x86-64
template <typename T>
MO_TARGET_AVX2_NOFMA void normalize_avx2(const uint8_t* in, const int64_t* m, int H, int W, uint64_t seed,
                                         const NormalizeSpec& s, T* o) {
  normalize_sample(in, m, H, W, seed, s, o);
}
template <typename T>
void normalize_any(const uint8_t* in, const int64_t* m, int H, int W, uint64_t seed, const NormalizeSpec& s, T* o) {
  if (cpu_isa() >= CpuIsa::avx2) return normalize_avx2(in, m, H, W, seed, s, o);
  normalize_sample(in, m, H, W, seed, s, o);
}
void normalize_f32(const uint8_t* in, const int64_t* m, int H, int W, uint64_t seed, const NormalizeSpec& s, float* o) {
  normalize_any(in, m, H, W, seed, s, o);
}
void normalize_bf16(const uint8_t* in, const int64_t* m, int H, int W, uint64_t seed, const NormalizeSpec& s, bf16_t* o) {
  normalize_any(in, m, H, W, seed, s, o);
}

}  // namespace

void normalize_erase_cpu(const Tensor& images, const Tensor& meta, uint64_t seed, const NormalizeSpec& spec, Tensor& out) {
  const int B = static_cast<int>(images.size(0)), H = static_cast<int>(images.size(1)), W = static_cast<int>(images.size(2));
  const uint8_t* img = images.data<uint8_t>();
  const int64_t* m = meta.data<int64_t>();
  const int64_t n = static_cast<int64_t>(H) * W * 3;
  for (int b = 0; b < B; ++b) {
    if (spec.dtype == DType::f32) normalize_f32(img + b * n, m + b * kMetaCols, H, W, seed, spec, out.data<float>() + b * n);
    else normalize_bf16(img + b * n, m + b * kMetaCols, H, W, seed, spec, out.data<bf16_t>() + b * n);
  }
}

Tensor normalize_erase(const Tensor& images, const Tensor& meta, uint64_t seed, const NormalizeSpec& spec) {
  MO_CHECK(images.dtype() == DType::u8 && images.dim() == 4 && images.size(3) == 3 && images.is_contiguous(),
           "normalize_erase: images must be contiguous uint8 (B, H, W, 3), got {}", images.str());
  MO_CHECK(meta.dtype() == DType::i64 && meta.dim() == 2 && meta.size(0) == images.size(0) &&
               meta.size(1) == kMetaCols && meta.is_contiguous(),
           "normalize_erase: meta must be int64 ({}, {}), got {}", images.size(0), kMetaCols, meta.str());
  MO_CHECK(images.device() == meta.device(), "normalize_erase: images on {}, meta on {}", images.device().str(),
           meta.device().str());
  MO_CHECK(spec.dtype == DType::f32 || spec.dtype == DType::bf16, "normalize_erase: output dtype {} (want float32 or bfloat16)",
           dtype_name(spec.dtype));
  const int64_t B = images.size(0), H = images.size(1), W = images.size(2);
  Shape shape = spec.channels_last ? Shape{B, H, W, 3} : Shape{B, 3, H, W};
  Tensor out = Tensor::empty(shape, spec.dtype, images.device());
  if (images.is_cuda()) {
#ifdef MO_WITH_CUDA
    normalize_erase_cuda(images, meta, seed, spec, out);
#else
    MO_FAIL("normalize_erase: CUDA tensor in a build without CUDA");
#endif
  } else {
    normalize_erase_cpu(images, meta, seed, spec, out);
  }
  return out;
}

}  // namespace mo::data
