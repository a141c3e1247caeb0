// image_decode.h: the image formats beside JPEG. One entry sniffs the format from the first bytes (never
// the file name) and decodes PNG (libpng) or WebP (libwebp) whole into 8-bit RGB, exactly as PIL's
// Image.open(f).convert('RGB') does, so that a model sees the pixels timm's loader would give it:
//  - alpha is dropped, not composited (RGBA, LA, palette or colour-key transparency);
//  - grayscale is replicated into R, G and B; 1-, 2- and 4-bit samples are scaled to 0..255;
//  - 16-bit samples keep their high byte, except 16-bit grayscale: PIL opens it as mode "I" (32-bit
//    integers) and convert('RGB') clips those to 0..255, so every value over 255 comes out white;
//  - palette indices past the PLTE entries read PIL's default palette, a grey ramp (index i -> i, i, i);
//  - gamma, colour profiles and ancillary chunks are ignored, as PIL ignores them;
//  - WebP decodes with libwebp's default options (fancy upsampling), as PIL's decoder does; an animated
//    WebP gives its first frame on the canvas (libwebpdemux's WebPAnimDecoder, which PIL uses).
// The hostile-input rules of the JPEG path hold: the declared size is checked against a pixel limit
// before anything is allocated, and every decoder error (libpng's longjmp included) comes back as
// false with a message. JPEG keeps its windowed decoder (jpeg.h); decode_image() covers all three.
#pragma once
#include <cstdint>
#include <string>

#include "data/image.h"
#include "data/jpeg.h"

namespace mo::data {

enum class ImageFormat : uint8_t { unknown, jpeg, png, webp };

// By magic bytes: JPEG FF D8, PNG's 8-byte signature, WebP "RIFF....WEBP".
ImageFormat sniff_image_format(const uint8_t* d, size_t n);
const char* image_format_name(ImageFormat f);  // "JPEG", "PNG", "WebP", "unknown"

// The size the header of d[0, n) declares, without decoding; false when the format is unknown or the
// header lies beyond n.
bool image_frame_size(const uint8_t* d, size_t n, int& width, int& height);

// Whole-image decodes of files held in memory into out (w x h RGB). False with `err` set on a corrupt,
// truncated or unsupported file, or one that declares more than max_pixels pixels.
bool decode_png(const uint8_t* d, size_t n, int64_t max_pixels, Image& out, std::string& err);
bool decode_webp(const uint8_t* d, size_t n, int64_t max_pixels, Image& out, std::string& err);
// False in a build without libpng/libwebp: decode_png/decode_webp then refuse every file with that reason.
bool png_webp_supported();
// JPEG (through `jpeg`, at full scale, with its pixel limit), PNG or WebP, chosen by sniffing.
bool decode_image(const uint8_t* d, size_t n, JpegDecoder& jpeg, Image& out, std::string& err);
// The message for data that is none of the three (an empty file said so).
std::string unknown_format_error(const uint8_t* d, size_t n);

// A file name the folder scans take as an image: .jpg, .jpeg, .png or .webp in any case.
bool is_image_name(const std::string& name);

}  // namespace mo::data
