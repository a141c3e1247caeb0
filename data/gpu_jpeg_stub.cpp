// gpu_jpeg_stub.cpp: gpu_jpeg.h for builds without nvJPEG (CPU-only, or CUDA without libnvjpeg): the
// GPU decoder is absent and says so; data.decoder: auto then picks the CPU.
#if !MO_WITH_NVJPEG
#include "autograd/check.h"
#include "data/gpu_jpeg.h"

namespace mo::data {

bool gpu_jpeg_built() { return false; }
bool gpu_jpeg_available() { return false; }

struct GpuJpegDecoder::Impl {};
GpuJpegDecoder::GpuJpegDecoder(int, int, int, bool, bool) {
  MO_FAIL("data.decoder: gpu: this build of mo has no nvJPEG (configure with CUDA and nvjpeg.h / libnvjpeg "
          "found, see MO_NVJPEG_ROOT); use data.decoder: cpu or auto");
}
GpuJpegDecoder::~GpuJpegDecoder() = default;
void GpuJpegDecoder::run(const GpuJob*, int, uint8_t*, std::vector<char>&, std::vector<std::string>&) {}
bool GpuJpegDecoder::decode_full(const uint8_t*, size_t, Image&, std::string&) { return false; }
bool GpuJpegDecoder::hardware() const { return false; }
GpuDecodeTimes GpuJpegDecoder::times() const { return {}; }

}  // namespace mo::data
#endif
