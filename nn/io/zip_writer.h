// zip_writer.h: writes the stored (uncompressed) zip layout that torch.save produces: each record's
// data starts on a 64-byte boundary (padding in the local header's extra field, as PyTorch's
// PyTorchStreamWriter does), CRC-32 and sizes are in the local header (no data descriptors), then the
// central directory. Archives past 4 GiB get zip64 records.
#pragma once
#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "nn/io/byte_reader.h"

namespace mo::nn::io {

class ZipWriter {
 public:
  // `what` names the destination in errors. The stream must stay open until finish(). `force_zip64`
  // writes zip64 records even for small archives (tests use it).
  ZipWriter(std::ostream& out, std::string what, bool force_zip64 = false)
      : out_(out), what_(std::move(what)), force_zip64_(force_zip64) {}
  void add(const std::string& name, Bytes data);
  void finish();  // central directory + end records; the writer cannot be used afterwards

 private:
  struct Written {
    std::string name;
    uint32_t crc;
    uint64_t size, local_offset;
  };
  void put(const std::vector<uint8_t>& b);
  std::ostream& out_;
  std::string what_;
  uint64_t pos_ = 0;
  std::vector<Written> written_;
  bool finished_ = false;
  bool force_zip64_;
};

}  // namespace mo::nn::io
