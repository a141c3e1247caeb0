// crc32c.h: CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), table-driven slicing-by-8 in software.
// Used for the checksums of checkpoint payloads and for TensorBoard's TFRecord framing, which stores
// the "masked" form masked_crc32c(x) = ((crc >> 15) | (crc << 17)) + 0xa282ead8.
#pragma once
#include <cstddef>
#include <cstdint>

namespace mo::tools {

// crc32c of `n` bytes, continuing from `crc` (0 for a fresh checksum). crc32c("123456789") = 0xE3069283.
uint32_t crc32c(const void* data, size_t n, uint32_t crc = 0);

inline uint32_t masked_crc32c(const void* data, size_t n) {
  uint32_t c = crc32c(data, n);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

}  // namespace mo::tools
