// checkpoint_io.cpp: the format registry, file I/O, Tensor <-> RawTensor conversion, and loading
// into / saving from a Module with automatic key renaming. See checkpoint_io.h.
#include "nn/io/checkpoint_io.h"

#include "nn/io/file_read.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <tuple>
#include <unordered_map>

#include "nn/io/file_read.h"
#include "nn/io/pth.h"
#include "nn/io/safetensors.h"
#include "nn/io/zip_reader.h"

namespace mo::nn::io {

static_assert(std::endian::native == std::endian::little, "checkpoint files are little-endian");

namespace {

std::vector<CheckpointFormat>& registry() {
  static std::vector<CheckpointFormat> formats = {
      {"pth",
       {".pth", ".pt", ".bin", ".ckpt", ".tar"},
       // zip, or a legacy pickle (PROTO opcode); a safetensors header length can start with 0x80 too
       [](Bytes head) {
         return looks_like_zip(head) || (head.size() >= 2 && head[0] == 0x80 && head[1] <= 5 &&
                                         !looks_like_safetensors(head));
       },
       [](const std::string& path, const ReadOptions& opt) {
         return read_pth(std::make_shared<const std::vector<uint8_t>>(read_file(path)), path, PthReadOptions{opt.entry});
       },
       [](const RawStateDict& sd, const std::string& path) {
         std::ofstream f(path, std::ios::binary);
         MO_CHECK(f.is_open(), "cannot write '{}': {}", path, std::strerror(errno));
         write_pth(sd, f, path);
       }},
      {"safetensors",
       {".safetensors"},
       [](Bytes head) { return looks_like_safetensors(head); },
       [](const std::string& path, const ReadOptions& opt) {
         MO_CHECK(opt.entry.empty(), "{}: safetensors files hold one flat state_dict; --entry does not apply", path);
         return read_safetensors(std::make_shared<const std::vector<uint8_t>>(read_file(path)), path);
       },
       [](const RawStateDict& sd, const std::string& path) {
         std::ofstream f(path, std::ios::binary);
         MO_CHECK(f.is_open(), "cannot write '{}': {}", path, std::strerror(errno));
         write_safetensors(sd, f, path);
       }},
  };
  return formats;
}

std::string extension(const std::string& path) {
  std::string file = std::filesystem::path(path).filename().string();
  size_t dot = file.rfind('.');
  std::string ext = dot == std::string::npos ? "" : file.substr(dot);
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext;
}

std::string choices() {
  std::string s;
  for (const auto& f : registry()) s += fmt::format("{}{} ({})", s.empty() ? "" : ", ", f.name, fmt::join(f.extensions, " "));
  return s;
}

std::string key_list(const std::vector<std::string>& keys) {
  size_t n = std::min<size_t>(keys.size(), 8);
  std::string s = fmt::format("{}", fmt::join(keys.begin(), keys.begin() + static_cast<std::ptrdiff_t>(n), ", "));
  if (keys.size() > n) s += fmt::format(", ... ({} more)", keys.size() - n);
  return s;
}

}  // namespace

void register_format(CheckpointFormat f) {
  MO_CHECK(!f.name.empty() && f.read && f.write, "register_format: a format needs a name, read and write");
  for (auto& g : registry())
    if (g.name == f.name) return void(g = std::move(f));
  registry().push_back(std::move(f));
}

const CheckpointFormat& format_for_write(const std::string& path, const std::string& name) {
  const std::string ext = extension(path);
  for (const auto& f : registry()) {
    if (!name.empty() ? f.name == name : std::find(f.extensions.begin(), f.extensions.end(), ext) != f.extensions.end())
      return f;
  }
  if (!name.empty()) MO_FAIL("unknown checkpoint format '{}'; known: {}", name, choices());
  MO_FAIL("'{}': cannot tell the checkpoint format from the extension '{}'; known: {}", path, ext, choices());
}

const CheckpointFormat& format_for_read(const std::string& path) {
  RegularFile f(path, "'" + path + "'");  // a folder, pipe or device is refused here, without blocking
  uint8_t head[64] = {};
  Bytes h(head, f.read_some(head, sizeof(head)));
  for (const auto& fmt_ : registry())
    if (fmt_.sniff && fmt_.sniff(h)) return fmt_;
  return format_for_write(path);
}

std::vector<uint8_t> read_file(const std::string& path) {
  return read_regular_file(path, "'" + path + "'", kMaxCheckpointBytes);
}

RawStateDict read_checkpoint(const std::string& path, const ReadOptions& opt) {
  RawStateDict sd = format_for_read(path).read(path, opt);
  std::unordered_map<std::string, std::string> seen;  // stripped -> original
  for (auto& [name, t] : sd.tensors) {
    check_raw(t, fmt::format("{}: tensor '{}'", path, name));  // whatever format read it
    std::string stripped = strip_wrapper_prefix(name);
    auto [it, fresh] = seen.emplace(stripped, name);
    MO_CHECK(fresh, "{}: keys '{}' and '{}' both mean '{}'", path, it->second, name, stripped);
    name = std::move(stripped);
  }
  for (const auto& [name, t] : sd.tensors) {
    if (int64_t bad = count_non_finite(t); bad > 0) {
      sd.warnings.push_back(fmt::format("{}: tensor '{}' has {} non-finite value(s) (NaN or Inf) of {}", path, name,
                                        bad, t.numel()));
      std::fprintf(stderr, "warning: %s\n", sd.warnings.back().c_str());
    }
  }
  return sd;
}

void write_checkpoint(const RawStateDict& sd, const std::string& path, const std::string& format) {
  namespace fs = std::filesystem;
  std::error_code ec;
  MO_CHECK(!fs::is_directory(path, ec), "cannot write '{}': it is a directory; name the output file", path);
  const fs::path dir = fs::path(path).parent_path();
  MO_CHECK(dir.empty() || fs::is_directory(dir, ec), "cannot write '{}': folder '{}' does not exist", path,
           dir.string());
  const CheckpointFormat& f = format_for_write(path, format);
  const std::string tmp = path + ".tmp";
  try {
    f.write(sd, tmp);
    fs::rename(tmp, path, ec);
    MO_CHECK(!ec, "cannot move '{}' to '{}': {}", tmp, path, ec.message());
  } catch (...) {
    fs::remove(tmp, ec);
    throw;
  }
}

RawStateDict rename_state_dict(const RawStateDict& sd, Naming to, const std::string& what) {
  std::vector<std::string> keys;
  for (const auto& [n, t] : sd.tensors) keys.push_back(n);
  const Naming from = detect_naming(keys, what);
  RawStateDict out;
  out.metadata = sd.metadata;
  for (const auto& [n, t] : sd.tensors) out.tensors.emplace_back(convert_name(n, from, to), t);
  return out;
}

NamedTensors load_state_dict_file(const std::string& path, const ReadOptions& opt) {
  RawStateDict sd = read_checkpoint(path, opt);
  NamedTensors out;
  out.reserve(sd.tensors.size());
  // Names over the same bytes (tied weights) share one mo::Tensor storage, as they did in the file.
  std::map<std::tuple<const void*, size_t, size_t, WireDType>, Tensor> made;
  for (const auto& [n, r] : sd.tensors) {
    auto key = std::make_tuple(static_cast<const void*>(r.buffer.get()), r.offset, r.nbytes, r.dtype);
    auto it = made.find(key);
    if (it == made.end() || r.nbytes == 0) it = made.insert_or_assign(key, tensor_from_raw(r)).first;
    out.emplace_back(n, it->second.shape() == r.shape ? it->second : it->second.view(r.shape));
  }
  return out;
}

std::string LoadReport::summary() const {
  std::string s = fmt::format("loaded {} tensors from {}", loaded, path);
  if (file_naming != model_naming && file_naming != Naming::unknown && model_naming != Naming::unknown)
    s += fmt::format(" ({} names -> {})", naming_name(file_naming), naming_name(model_naming));
  if (!missing.empty()) s += fmt::format("; {} missing: {}", missing.size(), key_list(missing));
  if (!unexpected.empty()) s += fmt::format("; {} unexpected: {}", unexpected.size(), key_list(unexpected));
  if (!kept.empty())
    s += fmt::format("; {} tensor(s) of another shape not loaded, the model's initialisation kept: {}", kept.size(),
                     fmt::join(kept, ", "));
  return s;
}

LoadReport load_into_model(Module& model, const std::string& path, const LoadOptions& opt) {
  return load_into_model(model, read_checkpoint(path, ReadOptions{opt.entry}), path, opt);
}

LoadReport load_into_model(Module& model, const RawStateDict& sd, const std::string& what, const LoadOptions& opt) {
  LoadReport rep;
  rep.path = what;
  rep.metadata = sd.metadata;
  rep.warnings = sd.warnings;
  auto params = model.named_parameters();
  std::vector<std::string> mkeys, fkeys;
  std::unordered_map<std::string, size_t> index;
  for (size_t k = 0; k < params.size(); ++k) mkeys.push_back(params[k].first), index.emplace(params[k].first, k);
  for (const auto& [n, t] : sd.tensors) fkeys.push_back(strip_wrapper_prefix(n));
  rep.model_naming = detect_naming(mkeys, "model");
  rep.file_naming = detect_naming(fkeys, what);

  std::vector<std::pair<size_t, const RawTensor*>> plan;  // parameter index <- file tensor
  std::vector<bool> hit(params.size(), false);
  std::vector<std::string> shape_errors;
  for (size_t k = 0; k < fkeys.size(); ++k) {
    const std::string key = convert_name(fkeys[k], rep.file_naming, rep.model_naming);
    const std::string shown = key == fkeys[k] ? "'" + key + "'" : fmt::format("'{}' (file key '{}')", key, fkeys[k]);
    auto it = index.find(key);
    if (it == index.end()) {
      rep.unexpected.push_back(key == fkeys[k] ? key : fkeys[k]);
      continue;
    }
    MO_CHECK(!hit[it->second], "{}: two tensors map to parameter {}", what, shown);
    hit[it->second] = true;
    const RawTensor& r = sd.tensors[k].second;
    const Padding* pad = model.padding_of(key);  // files hold the reference layout (unpadded)
    const Shape& want = pad ? pad->reference_shape : params[it->second].second.shape();
    if (r.shape != want) {
      const auto& keep = opt.keep_if_shape_differs;
      if (std::find(keep.begin(), keep.end(), key) != keep.end()) {
        rep.kept.push_back(fmt::format("{} (file {}, model {})", key, shape_string(r.shape), shape_str(want)));
        continue;
      }
      shape_errors.push_back(fmt::format("tensor {} has shape {} in the file but the model expects {}", shown,
                                         shape_string(r.shape), shape_str(want)));
      continue;
    }
    plan.emplace_back(it->second, &r);
  }
  for (size_t k = 0; k < params.size(); ++k)
    if (!hit[k]) rep.missing.push_back(params[k].first);
  if (!shape_errors.empty()) {
    size_t n = std::min<size_t>(shape_errors.size(), 5);
    MO_FAIL("{}: does not fit the model (a checkpoint for another model size?): {}{}", what,
            fmt::join(shape_errors.begin(), shape_errors.begin() + static_cast<std::ptrdiff_t>(n), "; "),
            shape_errors.size() > n ? fmt::format("; ... ({} more)", shape_errors.size() - n) : "");
  }
  if (opt.strict && (!rep.missing.empty() || !rep.unexpected.empty())) {
    std::string msg = fmt::format("{}: keys do not match the model (file names: {}, model names: {})", what,
                                  naming_name(rep.file_naming), naming_name(rep.model_naming));
    if (!rep.missing.empty())
      msg += fmt::format("; {} missing key(s) (in the model, not in the file): {}", rep.missing.size(),
                         key_list(rep.missing));
    if (!rep.unexpected.empty())
      msg += fmt::format("; {} unexpected key(s) (in the file, not in the model): {}", rep.unexpected.size(),
                         key_list(rep.unexpected));
    throw Error(msg);
  }
  for (const auto& [k, r] : plan) params[k].second.copy_(model.from_reference(params[k].first, tensor_from_raw(*r)));
  rep.loaded = plan.size();
  return rep;
}

RawStateDict state_dict_of(const Module& model, Naming names) {
  auto params = model.reference_parameters();
  std::vector<std::string> keys;
  for (const auto& [n, t] : params) keys.push_back(n);
  const Naming from = detect_naming(keys, "model");
  RawStateDict sd;
  for (const auto& [n, t] : params) sd.tensors.emplace_back(convert_name(n, from, names), raw_from_tensor(t));
  return sd;
}

void save_model(const Module& model, const std::string& path, Naming names, const std::string& format) {
  write_checkpoint(state_dict_of(model, names), path, format);
}

}  // namespace mo::nn::io
