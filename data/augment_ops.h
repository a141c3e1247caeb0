// augment_ops.h: the pixel operations behind RandAugment, each with the semantics of the PIL call that
// timm's auto_augment.py makes (PIL 9.4: ImageOps, ImageEnhance, Image.transform/rotate), on 8-bit RGB.
// LUT ops build PIL's table; enhance ops blend with PIL's float rounding; affine ops sample like
// libImaging/Geometry.c (bilinear / bicubic filters, pixels outside the source get the fill colour).
#pragma once
#include <array>

#include "data/image.h"
#include "data/resample.h"

namespace mo::data {

using Rgb = std::array<uint8_t, 3>;

void op_autocontrast(Image& img);                           // ImageOps.autocontrast (cutoff 0)
void op_equalize(Image& img);                               // ImageOps.equalize
void op_invert(Image& img);                                 // ImageOps.invert
void op_posterize(Image& img, int bits);                    // ImageOps.posterize (bits >= 8: unchanged)
void op_solarize(Image& img, int threshold);                // ImageOps.solarize
void op_solarize_add(Image& img, int add, int threshold);   // timm solarize_add
void op_color(Image& img, double factor);                   // ImageEnhance.Color
void op_contrast(Image& img, double factor);                // ImageEnhance.Contrast
void op_brightness(Image& img, double factor);              // ImageEnhance.Brightness
void op_sharpness(Image& img, double factor, Image& scratch);  // ImageEnhance.Sharpness

// Image.transform(size, AFFINE, m, resample, fillcolor): output (x, y) samples the input at
// (m0 (x+.5) + m1 (y+.5) + m2, m3 (x+.5) + m4 (y+.5) + m5). Result in `scratch`, then swapped into img.
void op_affine(Image& img, const double m[6], Interp interp, Rgb fill, Image& scratch);
// Image.rotate(degrees, resample, fillcolor) about the centre, same size (counter-clockwise).
void op_rotate(Image& img, double degrees, Interp interp, Rgb fill, Image& scratch);

}  // namespace mo::data
