// fuzz_transforms.cpp: libFuzzer target for the per-image transforms (data/transforms.h) on arbitrary file
// bytes: the training transform (header, RandomResizedCrop window, the windowed decode at a DCT scale with
// libjpeg-turbo's crop and skip calls, the resample, RandAugment) with three draws, and the evaluation
// transform. A rejection must come with a message; an accepted image must write every byte of its output
// slot (two runs over slots filled with different bytes agree).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "data/transforms.h"

namespace {

constexpr int kSize = 40;

// Runs f(out) twice, on a slot filled with 0x00 and with 0xFF first: an accepted image must write every
// byte (the results agree), a rejected one must say why.
template <typename F>
void check_fills(F f) {
  std::vector<uint8_t> a(kSize * kSize * 3, 0x00), b(a.size(), 0xFF);
  std::string ea, eb;
  const bool oka = f(mo::data::ImageView{a.data(), kSize, kSize, kSize * 3}, ea);
  const bool okb = f(mo::data::ImageView{b.data(), kSize, kSize, kSize * 3}, eb);
  if (oka != okb) std::abort();                        // the same bytes, the same verdict
  if (!oka && (ea.empty() || eb.empty())) std::abort();  // a rejection names its reason
  if (oka && a != b) std::abort();                     // every output byte was written
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mo::data;
  static Workspace ws;
  ws.decoder.set_max_pixels(1 << 20);
  static const TrainTransform train([] {
    TrainTransformConfig c;
    c.size = kSize;
    return c;
  }());
  static const EvalTransform eval([] {
    EvalTransformConfig c;
    c.size = kSize;
    c.crop_pct = 0.875;
    return c;
  }());
  for (uint64_t draw = 0; draw < 3; ++draw)
    check_fills([&](const ImageView& out, std::string& err) {
      Rng rng(size, draw);  // the same draws for both fills
      return train(data, size, rng, ws, out, err);
    });
  check_fills([&](const ImageView& out, std::string& err) { return eval(data, size, ws, out, err); });
  return 0;
}
