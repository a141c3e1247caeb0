// safetensors.cpp: header validation and tensor extraction, header serialization. See safetensors.h.
#include "nn/io/safetensors.h"

#include <algorithm>

#include "nn/io/json_lite.h"

namespace mo::nn::io {

namespace {
constexpr uint64_t kMaxHeader = 100'000'000;  // the reference implementation's limit

uint64_t header_len(Bytes data) {
  uint64_t n = 0;
  for (int k = 7; k >= 0; --k) n = (n << 8) | data[k];
  return n;
}

void json_string(std::string& out, const std::string& s) { out += json_quote(s); }
}  // namespace

bool looks_like_safetensors(Bytes data) {  // `data` may be only the file's first bytes
  if (data.size() < 9) return false;
  uint64_t n = header_len(data);
  return n >= 2 && n <= kMaxHeader && data[8] == '{';
}

RawStateDict read_safetensors(Bytes data, const std::string& what) {
  return read_safetensors(std::make_shared<const std::vector<uint8_t>>(data.begin(), data.end()), what);
}

RawStateDict read_safetensors(SharedBytes file, const std::string& what) {
  const Bytes data(*file);
  ByteReader r(data, what);
  const uint64_t n = r.u64();
  MO_CHECK(n <= kMaxHeader, "{}: safetensors header length {} exceeds the 100 MB limit (corrupt file?)", what, n);
  MO_CHECK(n <= r.remaining(), "{}: truncated: safetensors header needs {} bytes but only {} follow", what, n,
           r.remaining());
  std::string_view text = r.take_str(n);
  MO_CHECK(!text.empty() && text[0] == '{', "{}: safetensors header does not start with '{{'", what);
  const Json header = parse_json(text, what);
  MO_CHECK(header.kind == Json::Kind::object, "{}: safetensors header is not a JSON object", what);
  const Bytes payload = data.subspan(r.pos());

  struct Item {
    std::string name;
    RawTensor t;
    uint64_t begin, end;
  };
  std::vector<Item> items;
  RawStateDict out;
  for (size_t m = 0; m < header.keys.size(); ++m) {
    const std::string& name = header.keys[m];
    const Json& info = header.array[m];
    if (name == "__metadata__") {
      MO_CHECK(info.kind == Json::Kind::object, "{}: __metadata__ is not an object", what);
      for (size_t k = 0; k < info.keys.size(); ++k) {
        MO_CHECK(info.array[k].kind == Json::Kind::string, "{}: __metadata__ value for '{}' is not a string", what,
                 info.keys[k]);
        out.metadata.emplace_back(info.keys[k], info.array[k].s);
      }
      continue;
    }
    const std::string tw = what + ": tensor '" + name + "'";
    MO_CHECK(info.kind == Json::Kind::object, "{}: header entry is not an object", tw);
    const Json* dt = info.get("dtype");
    const Json* shape = info.get("shape");
    const Json* offs = info.get("data_offsets");
    MO_CHECK(dt && dt->kind == Json::Kind::string, "{}: missing or bad 'dtype'", tw);
    MO_CHECK(shape && shape->kind == Json::Kind::array, "{}: missing or bad 'shape'", tw);
    MO_CHECK(offs && offs->kind == Json::Kind::array && offs->array.size() == 2, "{}: missing or bad 'data_offsets'",
             tw);
    auto wd = wire_from_safetensors(dt->s);
    MO_CHECK(wd.has_value(), "{}: unsupported dtype '{}'", tw, dt->s);
    Item it{name, {}, 0, 0};
    it.t.dtype = *wd;
    for (const Json& d : shape->array) {
      MO_CHECK(d.kind == Json::Kind::number && d.is_int && d.i >= 0, "{}: bad dimension in 'shape'", tw);
      it.t.shape.push_back(d.i);
    }
    for (int k = 0; k < 2; ++k) {
      const Json& o = offs->array[k];
      MO_CHECK(o.kind == Json::Kind::number && o.is_int && o.i >= 0, "{}: bad 'data_offsets'", tw);
    }
    it.begin = static_cast<uint64_t>(offs->array[0].i);
    it.end = static_cast<uint64_t>(offs->array[1].i);
    const int64_t numel = checked_numel(it.t.shape, tw);
    const uint64_t nbytes = checked_nbytes(it.t.shape, it.t.dtype, tw);
    MO_CHECK(it.begin <= it.end && it.end - it.begin == nbytes,
             "{}: data_offsets [{}, {}] do not hold {} {} values of shape {} ({} bytes)", tw, it.begin, it.end,
             numel, dt->s, shape_string(it.t.shape), nbytes);
    items.push_back(std::move(it));
  }
  // The data block must be tiled exactly, in offset order.
  std::stable_sort(items.begin(), items.end(), [](const Item& a, const Item& b) { return a.begin < b.begin; });
  uint64_t at = 0;
  for (auto& it : items) {
    MO_CHECK(it.begin == at, "{}: tensor '{}' starts at data offset {} but the previous one ends at {} (gap or "
             "overlap)", what, it.name, it.begin, at);
    MO_CHECK(it.end <= payload.size(), "{}: truncated: tensor '{}' needs data bytes [{}, {}) but the file has {}",
             what, it.name, it.begin, it.end, payload.size());
    it.t.buffer = file;  // a window of the file: the data block is held once
    it.t.offset = r.pos() + static_cast<size_t>(it.begin);
    it.t.nbytes = static_cast<size_t>(it.end - it.begin);
    at = it.end;
    out.tensors.emplace_back(std::move(it.name), std::move(it.t));
  }
  MO_CHECK(at == payload.size(), "{}: {} trailing bytes after the last tensor (data block is {} bytes)", what,
           payload.size() - at, payload.size());
  return out;
}

void write_safetensors(const RawStateDict& sd, std::ostream& out, const std::string& what) {
  std::vector<size_t> order(sd.tensors.size());
  for (size_t k = 0; k < order.size(); ++k) order[k] = k;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return wire_info(sd.tensors[a].second.dtype).size > wire_info(sd.tensors[b].second.dtype).size;
  });
  std::string h = "{";
  if (!sd.metadata.empty()) {
    h += "\"__metadata__\":{";
    for (size_t k = 0; k < sd.metadata.size(); ++k) {
      if (k) h += ',';
      json_string(h, sd.metadata[k].first);
      h += ':';
      json_string(h, sd.metadata[k].second);
    }
    h += "}";
  }
  uint64_t at = 0;
  for (size_t k : order) {
    const auto& [name, t] = sd.tensors[k];
    MO_CHECK(name != "__metadata__", "{}: a tensor may not be named '__metadata__'", what);
    check_raw(t, what + ": tensor '" + name + "'");
    const uint64_t nbytes = t.nbytes;
    if (h.size() > 1) h += ',';
    json_string(h, name);
    h += fmt::format(":{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{},{}]}}", wire_info(t.dtype).safetensors,
                     fmt::join(t.shape, ","), at, checked_add(at, nbytes, what));
    at += nbytes;
  }
  h += '}';
  h.append((8 - h.size() % 8) % 8, ' ');
  uint8_t len[8];
  for (int k = 0; k < 8; ++k) len[k] = static_cast<uint8_t>(static_cast<uint64_t>(h.size()) >> (8 * k));
  out.write(reinterpret_cast<const char*>(len), 8);
  out.write(h.data(), static_cast<std::streamsize>(h.size()));
  for (size_t k : order) {
    const auto b = sd.tensors[k].second.bytes();
    out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  }
  out.flush();
  MO_CHECK(out.good(), "{}: write failed", what);
}

}  // namespace mo::nn::io
