// zip_writer.cpp: local headers with alignment padding, central directory, (zip64) end records.
// See zip_writer.h; field layout per PKWARE APPNOTE.TXT 4.3.7, 4.3.12, 4.3.14-4.3.16, 4.5.3.
#include "nn/io/zip_writer.h"

#include "nn/io/zip_reader.h"

namespace mo::nn::io {

namespace {
constexpr uint64_t kAlign = 64;  // PyTorch's kFieldAlignment
constexpr uint32_t kMax32 = 0xffffffffu;

struct Buf {
  std::vector<uint8_t> b;
  void u16(uint64_t v) { le(v, 2); }
  void u32(uint64_t v) { le(v, 4); }
  void u64(uint64_t v) { le(v, 8); }
  void str(const std::string& s) { b.insert(b.end(), s.begin(), s.end()); }
  void le(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) b.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
};
}  // namespace

void ZipWriter::put(const std::vector<uint8_t>& b) {
  out_.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  MO_CHECK(out_.good(), "{}: write failed after {} bytes", what_, pos_);
  pos_ += b.size();
}

void ZipWriter::add(const std::string& name, Bytes data) {
  MO_CHECK(!finished_, "{}: zip already finished", what_);
  MO_CHECK(name.size() < 0xffff, "{}: record name too long", what_);
  const bool z64 = force_zip64_ || data.size() >= kMax32 || pos_ >= kMax32;
  Buf h;
  h.u32(0x04034b50);
  h.u16(z64 ? 45 : 20);  // version needed
  h.u16(0);              // flags
  h.u16(0);              // stored
  h.u16(0);              // time
  h.u16(0x21);           // date: 1980-01-01
  uint32_t crc = crc32(data);
  h.u32(crc);
  h.u32(z64 ? kMax32 : data.size());
  h.u32(z64 ? kMax32 : data.size());
  h.u16(name.size());
  // extra field: [zip64 sizes] + "FB" padding so that the data starts on a 64-byte boundary
  uint64_t base = pos_ + 30 + name.size() + (z64 ? 20 : 0) + 4;
  uint64_t pad = (kAlign - base % kAlign) % kAlign;
  h.u16((z64 ? 20 : 0) + 4 + pad);
  h.str(name);
  if (z64) {
    h.u16(0x0001);
    h.u16(16);
    h.u64(data.size());
    h.u64(data.size());
  }
  h.u16(0x4246);  // "FB"
  h.u16(pad);
  h.b.insert(h.b.end(), pad, 'Z');
  written_.push_back({name, crc, data.size(), pos_});
  put(h.b);
  out_.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
  MO_CHECK(out_.good(), "{}: write failed for record '{}'", what_, name);
  pos_ += data.size();
}

void ZipWriter::finish() {
  MO_CHECK(!finished_, "{}: zip already finished", what_);
  finished_ = true;
  const uint64_t cd_start = pos_;
  for (const auto& w : written_) {
    const bool z64 = force_zip64_ || w.size >= kMax32 || w.local_offset >= kMax32;
    Buf c;
    c.u32(0x02014b50);
    c.u16(z64 ? 45 : 20);  // version made by
    c.u16(z64 ? 45 : 20);  // version needed
    c.u16(0);
    c.u16(0);
    c.u16(0);
    c.u16(0x21);
    c.u32(w.crc);
    c.u32(z64 ? kMax32 : w.size);
    c.u32(z64 ? kMax32 : w.size);
    c.u16(w.name.size());
    c.u16(z64 ? 28 : 0);  // extra
    c.u16(0);             // comment
    c.u16(0);             // disk
    c.u16(0);             // internal attributes
    c.u32(0);             // external attributes
    c.u32(z64 ? kMax32 : w.local_offset);
    c.str(w.name);
    if (z64) {
      c.u16(0x0001);
      c.u16(24);
      c.u64(w.size);
      c.u64(w.size);
      c.u64(w.local_offset);
    }
    put(c.b);
  }
  const uint64_t cd_size = pos_ - cd_start, n = written_.size();
  const bool z64 = force_zip64_ || n >= 0xffff || cd_start >= kMax32 || cd_size >= kMax32;
  Buf e;
  if (z64) {
    const uint64_t z64_eocd = pos_;
    e.u32(0x06064b50);
    e.u64(44);  // size of the rest of this record
    e.u16(45);
    e.u16(45);
    e.u32(0);
    e.u32(0);
    e.u64(n);
    e.u64(n);
    e.u64(cd_size);
    e.u64(cd_start);
    e.u32(0x07064b50);  // locator
    e.u32(0);
    e.u64(z64_eocd);
    e.u32(1);
  }
  e.u32(0x06054b50);
  e.u16(0);
  e.u16(0);
  e.u16(z64 ? 0xffff : n);
  e.u16(z64 ? 0xffff : n);
  e.u32(z64 ? kMax32 : cd_size);
  e.u32(z64 ? kMax32 : cd_start);
  e.u16(0);  // comment
  put(e.b);
  out_.flush();
  MO_CHECK(out_.good(), "{}: flush failed", what_);
}

}  // namespace mo::nn::io
