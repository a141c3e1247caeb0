// fuzz_transforms.cpp: libFuzzer target for the per-image transforms (data/transforms.h) on arbitrary file
// bytes: the training transform (header, RandomResizedCrop window, the windowed decode at a DCT scale with
// libjpeg-turbo's crop and skip calls, the resample, RandAugment) with three draws, and the evaluation
// transform. A rejection must come with a message; an accepted image must write every byte of its output
// slot (runs over slots filled with different bytes agree); and the outcome must not depend on what the
// workspace decoded before (a long-lived workspace, as a loader thread keeps, against a fresh one).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "data/transforms.h"

namespace {

constexpr int kSize = 40;

struct Outcome {
  bool ok = false;
  std::string err;
  std::vector<uint8_t> pixels;
};

// f(workspace, out, err) on a slot pre-filled with `fill`.
template <typename F>
Outcome run(F f, mo::data::Workspace& ws, uint8_t fill) {
  Outcome o;
  o.pixels.assign(kSize * kSize * 3, fill);
  o.ok = f(ws, mo::data::ImageView{o.pixels.data(), kSize, kSize, kSize * 3}, o.err);
  if (!o.ok) o.pixels.clear();
  return o;
}

template <typename F>
void check(F f, mo::data::Workspace& used) {
  mo::data::Workspace fresh;
  fresh.decoder.set_max_pixels(used.decoder.max_pixels());
  const Outcome a = run(f, used, 0x00), b = run(f, used, 0xFF), c = run(f, fresh, 0x00);
  if (!a.ok && a.err.empty()) std::abort();                  // a rejection names its reason
  if (a.ok != b.ok || a.pixels != b.pixels) std::abort();    // every output byte written, the same each time
  if (a.ok != c.ok || a.err != c.err || a.pixels != c.pixels) std::abort();  // history does not matter
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
    check([&](Workspace& w, const ImageView& out, std::string& err) {
      Rng rng(size, draw);  // the same draws for every run
      return train(data, size, rng, w, out, err);
    }, ws);
  check([&](Workspace& w, const ImageView& out, std::string& err) { return eval(data, size, w, out, err); }, ws);
  return 0;
}
