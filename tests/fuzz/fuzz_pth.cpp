// fuzz_pth.cpp: libFuzzer target for the whole torch.save reader (zip central directory, local headers,
// data.pkl, state_dict selection, tensor views over storage records). CRC checks are off so mutations
// reach the deeper code. Any mo::Error is an expected rejection; crashes, leaks, hangs and sanitizer
// reports are bugs. Built by scripts/io/run_fuzz.sh (or tests/fuzz/CMakeLists.txt with MO_FUZZ=ON).
#include <cstddef>
#include <cstdint>

#include "autograd/check.h"
#include "nn/io/pth.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    mo::nn::io::RawStateDict sd = mo::nn::io::read_pth({data, size}, "fuzz.pth", {.entry = "", .verify_crc = false});
    for (const auto& [name, t] : sd.tensors) (void)t.numel();
  } catch (const mo::Error&) {
  }
  return 0;
}
