// fuzz_safetensors.cpp: libFuzzer target for the safetensors reader (header length, the JSON parser,
// dtype/shape/offset validation, data tiling). mo::Error is an expected rejection; when a file is
// accepted, writing it back and reading again must give the same tensors.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <sstream>

#include "autograd/check.h"
#include "nn/io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mo::nn::io;
  RawStateDict sd;
  try {
    sd = read_safetensors({data, size}, "fuzz.safetensors");
  } catch (const mo::Error&) {
    return 0;
  }
  std::ostringstream os;
  write_safetensors(sd, os, "fuzz-out.safetensors");
  const std::string s = os.str();
  RawStateDict back = read_safetensors({reinterpret_cast<const uint8_t*>(s.data()), s.size()}, "fuzz-out");
  if (back.tensors.size() != sd.tensors.size() || back.metadata != sd.metadata) std::abort();
  for (const auto& [name, t] : sd.tensors) {
    const RawTensor* u = back.find(name);
    if (!u || !std::ranges::equal(u->bytes(), t.bytes()) || u->shape != t.shape || u->dtype != t.dtype) std::abort();
  }
  return 0;
}
