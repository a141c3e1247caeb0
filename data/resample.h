// resample.h: PIL's resize (Image.resize(size, filter, box), libImaging/Resample.c) for 8-bit RGB.
// Separable: a horizontal pass over the rows the vertical filter needs, then a vertical pass. Each
// output pixel is a weighted sum over the filter's support, scaled by the downscale factor (so a
// downscale is antialiased); weights are normalised, turned into 22-bit fixed point, and both passes
// round and clip to 8 bits, exactly as PIL does -- the results match PIL bit for bit.
#pragma once
#include <cstdint>

#include "data/image.h"

namespace mo::data {

enum class Interp : uint8_t { bilinear = 2, bicubic = 3 };  // PIL's filter ids

// Only part of a larger resize: dst receives the window [x0, x0 + dst.w) x [y0, y0 + dst.h) of the
// full_w x full_h result (a centre crop after a resize, computed without the rest of the resize).
struct ResampleWindow {
  int full_w = 0, full_h = 0, x0 = 0, y0 = 0;
};

// Resamples the region `box` = (x0, y0, x1, y1) of src (PIL's box argument; pixels outside src are never
// read) to fill dst. flip_x mirrors the output left-right (a horizontal flip after the resize, for free).
// src must have a byte or more of readable memory after its last pixel (pixels are loaded 4 bytes at a
// time); Image and JpegDecoder buffers keep 16 bytes of slack for this.
void resample(const ImageView& src, const float box[4], Interp interp, const ImageView& dst, bool flip_x = false,
              const ResampleWindow* window = nullptr);

}  // namespace mo::data
