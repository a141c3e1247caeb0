// model_info.cpp: a weight file's facts about itself as metadata strings and as a timm config.json.
#include "tools/engine/model_info.h"

#include "autograd/parse.h"

#include "nn/io/file_read.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "autograd/check.h"
#include "nn/io/checkpoint_io.h"
#include "nn/io/json_lite.h"
#include "nn/io/pth.h"
#include "nn/io/zip_reader.h"
#include "nn/io/zip_writer.h"
#include "nn/vit.h"

namespace mo::tools {
namespace {

namespace fs = std::filesystem;
using nn::io::Json;

void json_string(std::string& out, const std::string& s) { out += nn::io::json_quote(s); }

std::string json_strings(const std::vector<std::string>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) out += ", ";
    json_string(out, v[i]);
  }
  return out + "]";
}

std::string triple(const std::array<double, 3>& v) { return fmt::format("{},{},{}", v[0], v[1], v[2]); }

double parse_double(const std::string& s, const std::string& what, const std::string& key) {
  const std::optional<double> d = parse_float(s);
  MO_CHECK(d.has_value(), "{}: metadata '{}' = '{}' is not a number", what, key, s);
  return *d;
}

std::vector<std::string> string_array(const Json& j, const std::string& what, const std::string& key) {
  MO_CHECK(j.kind == Json::Kind::array, "{}: '{}' is not a list of strings", what, key);
  std::vector<std::string> out;
  for (const Json& e : j.array) {
    MO_CHECK(e.kind == Json::Kind::string, "{}: '{}' holds a non-string entry", what, key);
    out.push_back(e.s);
  }
  return out;
}

std::array<double, 3> number_triple(const Json& j, const std::string& what, const std::string& key) {
  MO_CHECK(j.kind == Json::Kind::array && j.array.size() == 3, "{}: '{}' is not a list of 3 numbers", what, key);
  std::array<double, 3> v{};
  for (int c = 0; c < 3; ++c) {
    MO_CHECK(j.array[c].kind == Json::Kind::number, "{}: '{}' is not a list of 3 numbers", what, key);
    v[c] = j.array[c].d;
  }
  return v;
}

void check_settings(const ModelInfo& m, const std::string& what) {
  MO_CHECK(m.img_size > 0 && m.img_size <= 8192, "{}: image size {} is out of range (1..8192)", what, m.img_size);
  MO_CHECK(m.crop_pct > 0 && m.crop_pct <= 1.0, "{}: crop_pct {} is out of range (0, 1]", what, m.crop_pct);
  MO_CHECK(m.interpolation == "bicubic" || m.interpolation == "bilinear",
           "{}: interpolation '{}' is not bicubic or bilinear", what, m.interpolation);
  for (int c = 0; c < 3; ++c)
    MO_CHECK(m.std[c] > 0 && std::isfinite(m.mean[c]), "{}: mean/std {} / {} are not usable", what, triple(m.mean),
             triple(m.std));
}

std::string slurp(const std::string& path) { return nn::io::read_text_file(path, "'" + path + "'"); }

}  // namespace

Metadata info_to_metadata(const ModelInfo& m) {
  Metadata md;
  if (!m.arch.empty()) md.emplace_back("arch", m.arch);
  if (m.num_classes > 0) md.emplace_back("num_classes", std::to_string(m.num_classes));
  if (!m.class_names.empty()) md.emplace_back("label_names", json_strings(m.class_names));
  md.emplace_back("img_size", std::to_string(m.img_size));
  md.emplace_back("crop_pct", fmt::format("{}", m.crop_pct));
  md.emplace_back("interpolation", m.interpolation);
  md.emplace_back("mean", triple(m.mean));
  md.emplace_back("std", triple(m.std));
  if (!m.attention.empty()) md.emplace_back("attention", m.attention);
  return md;
}

void set_metadata(Metadata& md, const std::string& key, const std::string& value) {
  for (auto& [k, v] : md)
    if (k == key) {
      v = value;
      return;
    }
  md.emplace_back(key, value);
}

CarriedInfo carried_info(const Metadata& md, const std::string& what) {
  CarriedInfo c;
  ModelInfo probe;
  for (const auto& [k, v] : md) {
    if (k == "img_size") {
      const double d = parse_double(v, what, k);
      MO_CHECK(d == std::floor(d), "{}: metadata 'img_size' = '{}' is not a whole number", what, v);
      probe.img_size = static_cast<int64_t>(std::min(d, 1e9));
      c.img_size = probe.img_size;
    } else if (k == "crop_pct") {
      c.crop_pct = probe.crop_pct = parse_double(v, what, k);
    } else if (k == "interpolation") {
      c.interpolation = probe.interpolation = v;
    } else if (k == "mean" || k == "std") {
      std::array<double, 3> t{};
      size_t start = 0;
      for (int i = 0; i < 3; ++i) {
        size_t end = v.find(',', start);
        MO_CHECK((i < 2) == (end != std::string::npos), "{}: metadata '{}' = '{}' is not 3 comma-separated numbers",
                 what, k, v);
        t[i] = parse_double(v.substr(start, end == std::string::npos ? std::string::npos : end - start), what, k);
        start = end + 1;
      }
      (k == "mean" ? c.mean : c.std) = t;
      (k == "mean" ? probe.mean : probe.std) = t;
    } else if (k == "attention") {
      MO_CHECK(v == "full" || v == "causal", "{}: metadata 'attention' = '{}' is not full or causal", what, v);
      c.attention = v;
    } else if (k == "label_names") {
      c.class_names = string_array(nn::io::parse_json(v, what + ": metadata 'label_names'"), what, k);
    }
  }
  MO_CHECK(c.mean.has_value() == c.std.has_value(), "{}: metadata has '{}' without '{}'", what,
           c.mean ? "mean" : "std", c.mean ? "std" : "mean");
  check_settings(probe, what);
  return c;
}

// --- .pth -----------------------------------------------------------------------------------

void register_pth_metadata() {
  nn::io::CheckpointFormat pth = nn::io::format_for_write("x.pth", "pth");
  // nn/io's sniffer takes any file starting with byte 0x80 for a legacy pickle, which is also the first
  // byte of every safetensors file whose header length is 128 modulo 256: those stay safetensors.
  // (A safetensors file: a little-endian u64 header length, then the JSON header's '{'.)
  auto sniff = pth.sniff;
  pth.sniff = [sniff](nn::io::Bytes h) {
    uint64_t n = 0;
    for (size_t k = 0; k < 8 && k < h.size(); ++k) n |= static_cast<uint64_t>(h[k]) << (8 * k);
    const bool safetensors = h.size() >= 9 && h[8] == '{' && n >= 2 && n <= (uint64_t{100} << 20);
    return !safetensors && sniff && sniff(h);
  };
  auto read_tensors = pth.read;
  pth.read = [read_tensors](const std::string& path, const nn::io::ReadOptions& opt) {
    nn::io::RawStateDict sd = read_tensors(path, opt);
    std::vector<uint8_t> data = nn::io::read_file(path);
    if (!nn::io::looks_like_zip(data)) return sd;
    nn::io::ZipReader z(data, path);
    for (const auto& e : z.entries()) {
      const size_t slash = e.name.find('/');
      if (slash == std::string::npos || e.name.substr(slash + 1) != "mo_metadata.json") continue;
      nn::io::Bytes b = z.read(e);
      const std::string what = path + ": " + e.name;
      Json j = nn::io::parse_json(std::string_view(reinterpret_cast<const char*>(b.data()), b.size()), what);
      MO_CHECK(j.kind == Json::Kind::object, "{}: not a JSON object", what);
      for (size_t k = 0; k < j.keys.size(); ++k) {
        MO_CHECK(j.array[k].kind == Json::Kind::string, "{}: the value of '{}' is not a string", what, j.keys[k]);
        set_metadata(sd.metadata, j.keys[k], j.array[k].s);
      }
    }
    return sd;
  };
  pth.write = [](const nn::io::RawStateDict& sd, const std::string& path) {
    std::ostringstream buf;
    nn::io::write_pth(sd, buf, path);
    const std::string archive = buf.str();
    nn::io::ZipReader z(nn::io::Bytes(reinterpret_cast<const uint8_t*>(archive.data()), archive.size()), path);
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    MO_CHECK(f.is_open(), "cannot write '{}': {}", path, std::strerror(errno));
    nn::io::ZipWriter w(f, path);
    for (const auto& e : z.entries()) w.add(e.name, z.read(e));
    if (!sd.metadata.empty()) {
      std::string js = "{";
      for (size_t k = 0; k < sd.metadata.size(); ++k) {
        if (k) js += ", ";
        json_string(js, sd.metadata[k].first);
        js += ": ";
        json_string(js, sd.metadata[k].second);
      }
      js += "}";
      w.add("archive/mo_metadata.json", nn::io::Bytes(reinterpret_cast<const uint8_t*>(js.data()), js.size()));
    }
    w.finish();
    f.close();
    MO_CHECK(f, "cannot write '{}': {}", path, std::strerror(errno));
  };
  nn::io::register_format(std::move(pth));
}

// --- Hugging Face folder ---------------------------------------------------------------------

std::string hf_config_json(const ModelInfo& m, int64_t num_features) {
  std::string a, interp, labels;
  json_string(a, m.arch);
  json_string(interp, m.interpolation);
  const auto nums = [](const std::array<double, 3>& v) { return fmt::format("[{}, {}, {}]", v[0], v[1], v[2]); };
  const bool vit = nn::is_vit_name(m.arch);
  std::string out = "{\n";
  out += fmt::format("  \"architecture\": {},\n  \"num_classes\": {},\n  \"num_features\": {},\n", a, m.num_classes,
                     num_features);
  out += vit ? "  \"global_pool\": \"token\",\n" : "  \"global_pool\": \"avg\",\n";
  if (m.attention == "causal") out += "  \"attention\": \"causal\",\n";
  if (!m.class_names.empty()) out += "  \"label_names\": " + json_strings(m.class_names) + ",\n";
  out += "  \"pretrained_cfg\": {\n";
  out += fmt::format("    \"input_size\": [3, {}, {}],\n", m.img_size, m.img_size);
  out += fmt::format("    \"interpolation\": {},\n    \"crop_pct\": {},\n    \"crop_mode\": \"center\",\n", interp,
                     m.crop_pct);
  out += fmt::format("    \"mean\": {},\n    \"std\": {},\n", nums(m.mean), nums(m.std));
  out += fmt::format("    \"num_classes\": {},\n", m.num_classes);
  if (vit) {
    out += "    \"pool_size\": null,\n    \"first_conv\": \"patch_embed.proj\",\n    \"classifier\": \"head\",\n";
    return out + "    \"fixed_input_size\": true\n  }\n}\n";
  }
  out += fmt::format("    \"pool_size\": [{}, {}],\n", (m.img_size + 31) / 32, (m.img_size + 31) / 32);
  out += "    \"first_conv\": \"stem.conv1\",\n    \"classifier\": \"head.fc\",\n";
  out += "    \"fixed_input_size\": false\n  }\n}\n";
  return out;
}

ModelInfo parse_hf_config(const std::string& text, const std::string& what) {
  Json root = nn::io::parse_json(text, what);
  MO_CHECK(root.kind == Json::Kind::object, "{}: not a JSON object", what);
  const Json* cfg = root.get("pretrained_cfg");
  if (cfg) MO_CHECK(cfg->kind == Json::Kind::object, "{}: 'pretrained_cfg' is not an object", what);
  else cfg = &root;  // timm's legacy single-dict form
  ModelInfo m;
  const Json* arch = root.get("architecture");
  MO_CHECK(arch && arch->kind == Json::Kind::string && !arch->s.empty(), "{}: no 'architecture' string", what);
  m.arch = arch->s;
  auto integer = [&](const Json* j, const char* key) {
    MO_CHECK(j->kind == Json::Kind::number && j->is_int, "{}: '{}' is not an integer", what, key);
    return j->i;
  };
  if (const Json* n = root.get("num_classes")) m.num_classes = integer(n, "num_classes");
  else if (const Json* n2 = cfg->get("num_classes")) m.num_classes = integer(n2, "pretrained_cfg.num_classes");
  MO_CHECK(m.num_classes > 0, "{}: no positive 'num_classes'", what);
  const Json* labels = root.get("label_names");
  if (!labels) labels = cfg->get("label_names");
  if (!labels) labels = cfg->get("labels");
  if (labels && labels->kind != Json::Kind::null) {
    m.class_names = string_array(*labels, what, "label_names");
    MO_CHECK(static_cast<int64_t>(m.class_names.size()) == m.num_classes, "{}: {} label_names for {} classes", what,
             m.class_names.size(), m.num_classes);
  }
  if (const Json* is = cfg->get("input_size")) {
    MO_CHECK(is->kind == Json::Kind::array && is->array.size() == 3, "{}: 'input_size' is not [3, H, W]", what);
    for (const Json& e : is->array) integer(&e, "input_size");
    MO_CHECK(is->array[0].i == 3 && is->array[1].i == is->array[2].i,
             "{}: 'input_size' [{}, {}, {}] is not a square RGB input", what, is->array[0].i, is->array[1].i,
             is->array[2].i);
    m.img_size = is->array[1].i;
  }
  if (const Json* c = cfg->get("crop_pct")) {
    MO_CHECK(c->kind == Json::Kind::number, "{}: 'crop_pct' is not a number", what);
    m.crop_pct = c->d;
  }
  if (const Json* i = cfg->get("interpolation")) {
    MO_CHECK(i->kind == Json::Kind::string, "{}: 'interpolation' is not a string", what);
    m.interpolation = i->s;
  }
  if (const Json* at = root.get("attention")) {
    MO_CHECK(at->kind == Json::Kind::string && (at->s == "full" || at->s == "causal"),
             "{}: 'attention' is not \"full\" or \"causal\"", what);
    m.attention = at->s;
  }
  if (const Json* mean = cfg->get("mean")) m.mean = number_triple(*mean, what, "mean");
  if (const Json* std = cfg->get("std")) m.std = number_triple(*std, what, "std");
  check_settings(m, what);
  return m;
}

bool is_hf_dir(const std::string& path) {
  std::error_code ec;
  return fs::is_directory(path, ec) && fs::is_regular_file(fs::path(path) / "config.json", ec);
}

nn::io::RawStateDict read_hf_dir(const std::string& dir) {
  const std::string cfg = (fs::path(dir) / "config.json").string();
  const std::string weights = (fs::path(dir) / "model.safetensors").string();
  ModelInfo m = parse_hf_config(slurp(cfg), cfg);
  std::error_code ec;
  MO_CHECK(fs::is_regular_file(weights, ec), "{}: no model.safetensors next to config.json", dir);
  nn::io::RawStateDict sd = nn::io::read_checkpoint(weights);
  for (const auto& [k, v] : info_to_metadata(m)) set_metadata(sd.metadata, k, v);
  return sd;
}

void write_hf_dir(const nn::io::RawStateDict& sd_in, const ModelInfo& info, int64_t num_features,
                  const std::string& dir) {
  MO_CHECK(!info.arch.empty(), "{}: the architecture is not known; name it with --arch", dir);
  std::error_code ec;
  fs::create_directories(dir, ec);
  MO_CHECK(!ec && fs::is_directory(dir), "cannot create the folder '{}': {}", dir, ec.message());
  nn::io::RawStateDict sd = sd_in;
  sd.metadata = info_to_metadata(info);
  set_metadata(sd.metadata, "format", "pt");
  nn::io::write_checkpoint(sd, (fs::path(dir) / "model.safetensors").string(), "safetensors");
  const std::string cfg = (fs::path(dir) / "config.json").string(), tmp = cfg + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    MO_CHECK(f, "cannot write '{}': {}", tmp, std::strerror(errno));
    f << hf_config_json(info, num_features);
    f.close();
    MO_CHECK(f, "cannot write '{}': {}", tmp, std::strerror(errno));
  }
  fs::rename(tmp, cfg, ec);
  MO_CHECK(!ec, "cannot move '{}' to '{}': {}", tmp, cfg, ec.message());
}

}  // namespace mo::tools
