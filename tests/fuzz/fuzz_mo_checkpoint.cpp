// fuzz_mo_checkpoint.cpp: libFuzzer target for mo's own checkpoint reader (tools/engine/checkpoint.cpp:
// magic, manifest size, protobuf manifest, tensor entries, payload extents and CRCs). When the input
// holds a whole manifest, its CRC-32C is recomputed first, so mutations of the manifest reach the
// entry checks instead of stopping at the checksum. The reader takes a path: each input is written to
// one scratch file of this process. mo::Error is an expected rejection.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "autograd/check.h"
#include "tools/engine/checkpoint.h"
#include "tools/engine/crc32c.h"

namespace {
const std::string& scratch() {
  static const std::string path = [] {
    const char* dir = std::getenv("TMPDIR");
    std::string p = std::string(dir && *dir ? dir : "/tmp") + "/fuzz_mo_checkpoint.XXXXXX";
    int fd = ::mkstemp(p.data());
    if (fd < 0) std::abort();
    ::close(fd);
    std::atexit([] { std::remove(scratch().c_str()); });
    return p;
  }();
  return path;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<uint8_t> b(data, data + size);
  uint64_t n = 0;
  if (b.size() >= 16) std::memcpy(&n, b.data() + 8, 8);
  if (b.size() >= 20 && n <= b.size() - 20) {  // "MOCKPT01" | size | manifest | crc32c | payload
    const uint32_t crc = mo::tools::crc32c(b.data() + 16, n);
    std::memcpy(b.data() + 16 + n, &crc, 4);
  }
  std::FILE* f = std::fopen(scratch().c_str(), "wb");
  if (!f) std::abort();
  if (!b.empty() && std::fwrite(b.data(), b.size(), 1, f) != 1) std::abort();
  std::fclose(f);
  try {
    (void)mo::tools::read_checkpoint_header(scratch());
    mo::tools::CheckpointState s = mo::tools::load_checkpoint(scratch());
    for (const auto& [name, t] : s.model) (void)t.numel();
  } catch (const mo::Error&) {
  }
  return 0;
}
