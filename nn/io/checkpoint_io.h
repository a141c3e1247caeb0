// checkpoint_io.h: the entry points the tools use to read and write weight files in any supported
// format, and to load them into (or save them from) a model.
//
// Formats are entries of a small registry (name, file extensions, a content sniffer, read, write), all
// speaking RawStateDict (raw_tensor.h). Built in: "pth" (torch.save zip: .pth .pt .bin .ckpt .tar) and
// "safetensors" (.safetensors). Adding a format is one call:
// register_format({"mo", {".mo"}, sniff_or_empty, read_fn, write_fn}); from then on read_checkpoint,
// write_checkpoint and load_into_model accept it. nn/ cannot include tools/, so mo's native checkpoint
// (tools/engine/checkpoint.h) is registered from the tools: tools::register_mo_format() in
// tools/engine/weights.cpp, which every tool calls.
//
// Reading for a model: load_into_model detects whether the file uses official or timm key names (and
// which the model uses), renames, strips "module."/"_orig_mod." prefixes, checks every shape before
// copying anything (an error names the key and both shapes), and reports missing/unexpected keys (an
// error when strict). Tensor dtypes are converted to each parameter's dtype (fp16/bf16/fp64 -> fp32).
// Files always hold the reference layout: a parameter the model stores padded (Module::padding_of) is
// padded on load and unpadded on save, so shapes and bytes are PyTorch's.
#pragma once
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "autograd/tensor.h"
#include "nn/io/byte_reader.h"
#include "nn/io/names.h"
#include "nn/io/raw_tensor.h"
#include "nn/io/tensor_convert.h"
#include "nn/module.h"

namespace mo::nn::io {

struct ReadOptions {
  std::string entry;  // top-level key of a training checkpoint holding the weights; empty = automatic
};

struct CheckpointFormat {
  std::string name;                     // "pth", "safetensors", "native"
  std::vector<std::string> extensions;  // lower-case, with the dot: ".pth"
  std::function<bool(Bytes head)> sniff;  // true if the first bytes are this format's; may be empty
  std::function<RawStateDict(const std::string& path, const ReadOptions& opt)> read;
  std::function<void(const RawStateDict& sd, const std::string& path)> write;
};

// Adds a format, or replaces the one with the same name.
void register_format(CheckpointFormat f);
// The format a path would be written in (by extension, or `name` when given); throws listing the choices.
const CheckpointFormat& format_for_write(const std::string& path, const std::string& name = "");
// The format of an existing file: by its first bytes, else by extension.
const CheckpointFormat& format_for_read(const std::string& path);

// Whole-file read with a clear error naming the path.
std::vector<uint8_t> read_file(const std::string& path);

// Reads any registered format; keys keep their naming, wrapper prefixes ("module.") are stripped.
// Every tensor's byte count is checked against its shape; each tensor holding NaN/Inf values is
// warned about once on stderr, by name and count (kept in RawStateDict::warnings).
RawStateDict read_checkpoint(const std::string& path, const ReadOptions& opt = {});
// Writes `sd` (to path + ".tmp", then renamed into place). `format` empty = from the extension.
void write_checkpoint(const RawStateDict& sd, const std::string& path, const std::string& format = "");
// Renames every key to `to` (detecting the current naming); `to` unknown keeps the keys.
RawStateDict rename_state_dict(const RawStateDict& sd, Naming to, const std::string& what = "state_dict");

// --- mo::Tensor side ----------------------------------------------------------------------------
using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// tensor_from_raw / raw_from_tensor: see tensor_convert.h.

// The tensors of a weight file in file order (names as stored, minus wrapper prefixes), on the CPU;
// names over the same bytes in the file share one storage.
NamedTensors load_state_dict_file(const std::string& path, const ReadOptions& opt = {});

struct LoadOptions {
  bool strict = true;   // missing or unexpected keys are an error (otherwise only reported)
  std::string entry;    // as ReadOptions::entry
  // Parameters (model names) that keep their current values when the file's tensor has another shape
  // (fine-tuning onto another number of classes: the classifier starts afresh, as timm does).
  std::vector<std::string> keep_if_shape_differs;
};

struct LoadReport {
  std::string path;
  Naming file_naming = Naming::unknown, model_naming = Naming::unknown;
  size_t loaded = 0;
  std::vector<std::string> missing;     // model parameters the file does not have
  std::vector<std::string> unexpected;  // file tensors (renamed to the model's naming) the model does not have
  std::vector<std::string> kept;        // keep_if_shape_differs parameters left as they were, with both shapes
  std::vector<std::pair<std::string, std::string>> metadata;  // e.g. arch, epoch
  std::vector<std::string> warnings;    // from the read (tensors with NaN/Inf values), already printed
  std::string summary() const;  // one line: "loaded 172 tensors from x.pth (timm names -> official)"
};

LoadReport load_into_model(Module& model, const std::string& path, const LoadOptions& opt = {});
LoadReport load_into_model(Module& model, const RawStateDict& sd, const std::string& what, const LoadOptions& opt = {});

// The model's parameters with keys in `names` (the model's own naming is detected), as CPU raw tensors.
RawStateDict state_dict_of(const Module& model, Naming names = Naming::official);
// state_dict_of + write_checkpoint.
void save_model(const Module& model, const std::string& path, Naming names = Naming::official,
                const std::string& format = "");

}  // namespace mo::nn::io
