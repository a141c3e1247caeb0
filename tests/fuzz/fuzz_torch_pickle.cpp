// fuzz_torch_pickle.cpp: libFuzzer target for the data-only unpickler and everything after it in the
// torch reader. The input becomes archive/data.pkl of a valid zip that also holds small storage records
// archive/data/0..3, so every mutation reaches the pickle machine, the whitelist, state_dict selection
// and the bounds checks of tensor views. mo::Error is an expected rejection.
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>

#include "autograd/check.h"
#include "nn/io/pickle_reader.h"
#include "nn/io/pth.h"
#include "nn/io/zip_writer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mo::nn::io;
  try {  // the bare unpickler first
    Pickle p = unpickle({data, size}, "fuzz.pkl");
    (void)describe(p.root);
    (void)dict_get(p.root, "state_dict");
  } catch (const mo::Error&) {
  }
  std::ostringstream os;
  ZipWriter z(os, "fuzz.pth");
  z.add("archive/data.pkl", {data, size});
  static const std::vector<uint8_t> storage(256, 0x3f);
  z.add("archive/data/0", {storage.data(), 256});  // 64 float32 / 32 float64 / 128 float16
  z.add("archive/data/1", {storage.data(), 16});
  z.add("archive/data/2", {storage.data(), 0});
  z.add("archive/data/3", {storage.data(), 7});
  z.add("archive/version", {storage.data(), 1});
  z.finish();
  const std::string zip = os.str();
  try {
    RawStateDict sd = read_pth({reinterpret_cast<const uint8_t*>(zip.data()), zip.size()}, "fuzz.pth");
    for (const auto& [name, t] : sd.tensors) (void)t.numel();
  } catch (const mo::Error&) {
  }
  return 0;
}
