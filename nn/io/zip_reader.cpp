// zip_reader.cpp: end-of-central-directory search, zip64 records, central directory, local headers
// (see zip_reader.h). Format reference: PKWARE APPNOTE.TXT sections 4.3.6-4.3.16 and 4.5.3.
#include "nn/io/zip_reader.h"

#include <zlib.h>

#include <algorithm>

namespace mo::nn::io {

namespace {
constexpr uint32_t kLocalSig = 0x04034b50, kCentralSig = 0x02014b50, kEocdSig = 0x06054b50;
constexpr uint32_t kZip64EocdSig = 0x06064b50, kZip64LocatorSig = 0x07064b50;
}  // namespace

uint32_t crc32(Bytes data, uint32_t crc) {  // zlib's (zip's CRC-32), in chunks its uInt length can take
  uLong c = crc;
  for (size_t off = 0; off < data.size();) {
    const size_t n = std::min<size_t>(data.size() - off, size_t{1} << 30);
    c = ::crc32(c, reinterpret_cast<const Bytef*>(data.data() + off), static_cast<uInt>(n));
    off += n;
  }
  return static_cast<uint32_t>(c);
}

bool looks_like_zip(Bytes data) {
  return data.size() >= 4 && data[0] == 'P' && data[1] == 'K' && data[2] == 3 && data[3] == 4;
}

ZipReader::ZipReader(Bytes data, std::string what) : data_(data), what_(std::move(what)) { parse(); }

void ZipReader::parse() {
  ByteReader r(data_, what_ + " (zip)");
  MO_CHECK(data_.size() >= 22, "{}: not a zip archive or truncated (only {} bytes)", what_, data_.size());
  // 1. The end-of-central-directory record: the last 22 bytes plus a comment of up to 65535 bytes.
  size_t eocd = SIZE_MAX;
  size_t lowest = data_.size() > 22 + 65535 ? data_.size() - 22 - 65535 : 0;
  for (size_t p = data_.size() - 22 + 1; p > lowest; --p) {
    r.seek(p - 1);
    if (r.u32() == kEocdSig) {
      eocd = p - 1;
      break;
    }
  }
  MO_CHECK(eocd != SIZE_MAX, "{}: truncated or not a zip archive (no end-of-central-directory record)", what_);
  r.seek(eocd + 4);
  uint16_t disk = r.u16(), cd_disk = r.u16();
  uint16_t n_disk = r.u16();
  uint64_t n_total = r.u16();
  uint64_t cd_size = r.u32(), cd_offset = r.u32();
  MO_CHECK(disk == 0 && cd_disk == 0 && n_disk == n_total, "{}: multi-disk zip archives are not supported", what_);
  // 2. zip64: a locator just before the EOCD points at the zip64 EOCD record with 64-bit fields.
  if (n_total == 0xffff || cd_size == 0xffffffffu || cd_offset == 0xffffffffu) {
    MO_CHECK(eocd >= 20, "{}: zip64 archive without a zip64 locator", what_);
    r.seek(eocd - 20);
    MO_CHECK(r.u32() == kZip64LocatorSig, "{}: zip64 archive without a zip64 locator", what_);
    r.u32();  // disk with the zip64 EOCD
    uint64_t z64 = r.u64();
    r.seek(z64);
    MO_CHECK(r.u32() == kZip64EocdSig, "{}: bad zip64 end-of-central-directory signature at {}", what_, z64);
    r.u64();  // record size
    r.u16();  // version made by
    r.u16();  // version needed
    MO_CHECK(r.u32() == 0 && r.u32() == 0, "{}: multi-disk zip archives are not supported", what_);
    r.u64();  // entries on this disk
    n_total = r.u64();
    cd_size = r.u64();
    cd_offset = r.u64();
  }
  MO_CHECK(cd_offset <= data_.size() && cd_size <= data_.size() - cd_offset,
           "{}: truncated: central directory [{}, +{}) is past the end ({} bytes)", what_, cd_offset, cd_size,
           data_.size());
  MO_CHECK(n_total <= cd_size / 46, "{}: central directory of {} bytes cannot hold {} entries", what_, cd_size, n_total);
  // 3. Central directory entries, each followed by its local header.
  r.seek(cd_offset);
  entries_.reserve(static_cast<size_t>(n_total));
  for (uint64_t i = 0; i < n_total; ++i) {
    MO_CHECK(r.u32() == kCentralSig, "{}: bad central directory entry {} at offset {}", what_, i, r.pos() - 4);
    r.u16();  // version made by
    r.u16();  // version needed
    uint16_t flags = r.u16();
    Entry e;
    e.method = r.u16();
    r.u32();  // time, date
    e.crc = r.u32();
    e.comp_size = r.u32();
    e.size = r.u32();
    uint16_t name_len = r.u16(), extra_len = r.u16(), comment_len = r.u16();
    uint16_t start_disk = r.u16();
    r.u16();  // internal attributes
    r.u32();  // external attributes
    uint64_t local = r.u32();
    e.name = std::string(r.take_str(name_len));
    ByteReader extra(r.take(extra_len), what_ + " (zip extra field of '" + e.name + "')");
    r.take(comment_len);
    while (extra.remaining() >= 4) {  // zip64 extended information: only the fields that are saturated
      uint16_t id = extra.u16(), len = extra.u16();
      ByteReader field(extra.take(len), extra.what());
      if (id != 0x0001) continue;
      if (e.size == 0xffffffffu) e.size = field.u64();
      if (e.comp_size == 0xffffffffu) e.comp_size = field.u64();
      if (local == 0xffffffffu) local = field.u64();
    }
    MO_CHECK(start_disk == 0 || start_disk == 0xffff, "{}: entry '{}' is on another disk", what_, e.name);
    MO_CHECK(!(flags & 1), "{}: entry '{}' is encrypted", what_, e.name);
    MO_CHECK(index_.emplace(e.name, entries_.size()).second, "{}: duplicate entry '{}'", what_, e.name);
    // Local header: its own name/extra lengths decide where the data starts.
    ByteReader lr(data_, what_ + " (local header of '" + e.name + "')");
    lr.seek(local);
    MO_CHECK(lr.u32() == kLocalSig, "{}: bad local header for entry '{}' at offset {}", what_, e.name, local);
    lr.take(22);
    uint16_t lname = lr.u16(), lextra = lr.u16();
    lr.take(static_cast<uint64_t>(lname) + lextra);
    e.data_offset = lr.pos();
    MO_CHECK(e.comp_size <= data_.size() - e.data_offset,
             "{}: truncated: entry '{}' needs {} bytes at offset {}, the archive has {}", what_, e.name, e.comp_size,
             e.data_offset, data_.size());
    entries_.push_back(std::move(e));
  }
}

const ZipReader::Entry* ZipReader::find(std::string_view name) const {
  auto it = index_.find(std::string(name));
  return it == index_.end() ? nullptr : &entries_[it->second];
}

Bytes ZipReader::read(const Entry& e, bool verify_crc) const {
  MO_CHECK(e.method == 0,
           "{}: entry '{}' is compressed (method {}); torch.save writes stored entries — re-save it with torch.save",
           what_, e.name, e.method);
  MO_CHECK(e.size == e.comp_size, "{}: stored entry '{}' has size {} but compressed size {}", what_, e.name, e.size,
           e.comp_size);
  Bytes b = data_.subspan(static_cast<size_t>(e.data_offset), static_cast<size_t>(e.size));
  if (verify_crc) {
    uint32_t c = crc32(b);
    MO_CHECK(c == e.crc, "{}: entry '{}' is corrupt (CRC-32 {:08x}, expected {:08x})", what_, e.name, c, e.crc);
  }
  return b;
}

Bytes ZipReader::read(std::string_view name, bool verify_crc) const {
  const Entry* e = find(name);
  MO_CHECK(e != nullptr, "{}: no entry '{}' in the zip archive", what_, name);
  return read(*e, verify_crc);
}

}  // namespace mo::nn::io
