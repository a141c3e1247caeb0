// tensorboard_reader.h: reads back the event files tools/engine/tensorboard_writer writes, for the tests
// (the library only writes them): every TFRecord with both CRCs checked, and the scalar events.
#pragma once
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "autograd/check.h"
#include "tools/engine/crc32c.h"
#include "tools/engine/tb_event.pb.h"

namespace mo::tools {

// The scalar values of an event file: (tag, step, value) in file order.
struct ScalarEvent {
  std::string tag;
  int64_t step;
  float value;
};

// Every record of a TFRecord file, checking both CRCs; throws naming the file and offset.
inline std::vector<std::string> read_tfrecords(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  MO_CHECK(f != nullptr, "cannot open '{}': {}", path, std::strerror(errno));
  std::vector<std::string> out;
  long offset = 0;
  for (;;) {
    uint64_t len;
    uint32_t len_crc, data_crc;
    size_t got = std::fread(&len, 1, sizeof(len), f);
    if (got == 0) break;
    bool ok = got == sizeof(len) && std::fread(&len_crc, sizeof(len_crc), 1, f) == 1 &&
              len_crc == masked_crc32c(&len, sizeof(len)) && len < (1ull << 31);
    std::string data;
    if (ok) {
      data.resize(len);
      ok = (len == 0 || std::fread(data.data(), len, 1, f) == 1) && std::fread(&data_crc, sizeof(data_crc), 1, f) == 1 &&
           data_crc == masked_crc32c(data.data(), data.size());
    }
    if (!ok) {
      std::fclose(f);
      MO_FAIL("'{}': truncated or corrupt TFRecord at byte {}", path, offset);
    }
    out.push_back(std::move(data));
    offset += static_cast<long>(sizeof(len) + 8 + len);
  }
  std::fclose(f);
  return out;
}

inline std::vector<ScalarEvent> read_scalar_events(const std::string& path) {
  std::vector<ScalarEvent> out;
  for (const std::string& rec : read_tfrecords(path)) {
    tb::Event ev;
    MO_CHECK(ev.ParseFromString(rec), "'{}': a record is not an Event", path);
    if (!ev.has_summary()) continue;
    for (const auto& v : ev.summary().value()) out.push_back({v.tag(), ev.step(), v.simple_value()});
  }
  return out;
}

}  // namespace mo::tools
