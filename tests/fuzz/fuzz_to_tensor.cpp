// fuzz_to_tensor.cpp: libFuzzer target for the path from a file to mo tensors: the input is read as a
// torch.save zip (CRC checks off) when it starts with a zip signature, else as safetensors; every
// tensor accepted is then checked (shape against bytes), scanned for NaN/Inf and converted to a
// mo::Tensor, as the tools do when they load weights. mo::Error is an expected rejection; a crash,
// a sanitizer report, or a converted tensor whose size disagrees with its shape is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "autograd/check.h"
#include "nn/io/pth.h"
#include "nn/io/safetensors.h"
#include "nn/io/tensor_convert.h"
#include "nn/io/zip_reader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mo::nn::io;
  try {
    RawStateDict sd = looks_like_zip({data, size})
                          ? read_pth({data, size}, "fuzz.pth", {.entry = "", .verify_crc = false})
                          : read_safetensors({data, size}, "fuzz.safetensors");
    for (const auto& [name, t] : sd.tensors) {
      check_raw(t, name);
      (void)count_non_finite(t);
      mo::Tensor m = tensor_from_raw(t);
      if (m.numel() != t.numel()) std::abort();
    }
  } catch (const mo::Error&) {
  }
  return 0;
}
