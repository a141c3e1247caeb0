// zip_reader.h: a small, strict reader for the zip container of torch.save (PyTorch >= 1.6). It parses
// the end-of-central-directory record (zip64 too), the central directory and each local header itself,
// bounds-checks every length and offset, and returns stored (uncompressed) entries as views of the input
// after checking their CRC-32. Compressed, encrypted or multi-disk archives are refused with a message
// naming the entry. The input span must outlive the reader.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "nn/io/byte_reader.h"

namespace mo::nn::io {

uint32_t crc32(Bytes data, uint32_t crc = 0);  // IEEE 802.3 (zip's CRC), chainable

bool looks_like_zip(Bytes data);  // starts with a local file header signature

class ZipReader {
 public:
  struct Entry {
    std::string name;
    uint16_t method = 0;   // 0 = stored
    uint32_t crc = 0;
    uint64_t size = 0;         // uncompressed
    uint64_t comp_size = 0;
    uint64_t data_offset = 0;  // where the entry's bytes start in the archive
  };

  // `what` names the archive in errors (usually its path).
  ZipReader(Bytes data, std::string what);

  const std::vector<Entry>& entries() const { return entries_; }
  const Entry* find(std::string_view name) const;  // nullptr when absent
  // The bytes of a stored entry (a view into the input); checks the CRC unless verify_crc is false.
  Bytes read(const Entry& e, bool verify_crc = true) const;
  Bytes read(std::string_view name, bool verify_crc = true) const;  // throws when absent

 private:
  void parse();
  Bytes data_;
  std::string what_;
  std::vector<Entry> entries_;
  std::unordered_map<std::string, size_t> index_;  // name -> position in entries_
};

}  // namespace mo::nn::io
