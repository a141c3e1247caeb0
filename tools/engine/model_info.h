// model_info.h: what a weight file says about itself, so it can be used without the recipe that made
// it: the architecture, the number of classes, the class names and the eval input settings (image size,
// crop_pct, interpolation, mean, std). Every file mo writes carries these facts:
//   - .safetensors: string entries of __metadata__ (plus "format": "pt", which Hugging Face loaders want);
//   - .pth: a record <archive>/mo_metadata.json (a JSON object of strings) beside data.pkl, which
//     torch.load ignores (register_pth_metadata wraps nn/io's pth format to write and read it);
//   - .mo: the manifest's model name, class names and a stored config with the data settings;
//   - .onnx: metadata_props;
//   - a Hugging Face folder (--hf-dir): config.json in timm's pretrained_cfg form.
// The keys, as strings: arch, num_classes, label_names (a JSON array), img_size, crop_pct, interpolation,
// mean and std ("0.485,0.456,0.406", in 0..1 units), and for a ViT attention (full | causal: the mask the
// model was trained with, so that a causal model is evaluated causal; absent = full).
#pragma once
#include <array>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "nn/io/raw_tensor.h"

namespace mo::tools {

struct ModelInfo {
  std::string arch;
  int64_t num_classes = 0;
  std::vector<std::string> class_names;  // empty: not known
  int64_t img_size = 224;
  double crop_pct = 1.0;
  std::string interpolation = "bicubic";
  std::array<double, 3> mean{0.485, 0.456, 0.406}, std{0.229, 0.224, 0.225};
  std::string attention;  // ViT: full | causal; empty: not said (full)
};

using Metadata = std::vector<std::pair<std::string, std::string>>;

// The metadata entries of `info` (keys above).
Metadata info_to_metadata(const ModelInfo& info);

// The eval settings a file's metadata carries (each unset when absent); a malformed value is an error
// naming `what` and the key.
struct CarriedInfo {
  std::optional<int64_t> img_size;
  std::optional<double> crop_pct;
  std::optional<std::string> interpolation;
  std::optional<std::array<double, 3>> mean, std;
  std::vector<std::string> class_names;
  std::optional<std::string> attention;  // "full" or "causal"
};
CarriedInfo carried_info(const Metadata& md, const std::string& what);

// Replaces nn/io's "pth" format by one that also writes sd.metadata as <archive>/mo_metadata.json and reads
// it back into the metadata (files without it read as before). Called by register_mo_format().
void register_pth_metadata();

// Sets (or replaces) `key` in `md`.
void set_metadata(Metadata& md, const std::string& key, const std::string& value);

// --- Hugging Face folder (timm local-dir / hf-hub layout) -----------------------------------------
// config.json as timm's save_config_for_hf writes it: architecture, num_classes, num_features,
// global_pool, label_names at the top level; pretrained_cfg with input_size, interpolation, crop_pct,
// crop_mode, mean, std, num_classes, pool_size, first_conv, classifier, fixed_input_size (a ViT's: token
// pooling, patch_embed.proj, head, no pool_size, a fixed input size). A causal ViT adds "attention":
// "causal" at the top level, which mo reads back and timm ignores (timm's ViT has no causal mode).
std::string hf_config_json(const ModelInfo& info, int64_t num_features);
// Reads such a config.json (also timm's legacy single-dict form); errors name the file and key.
ModelInfo parse_hf_config(const std::string& text, const std::string& what);
// `path` is a folder holding config.json and model.safetensors.
bool is_hf_dir(const std::string& path);
// Reads OUT/model.safetensors with OUT/config.json's facts as its metadata (arch, num_classes, ...).
nn::io::RawStateDict read_hf_dir(const std::string& dir);
// Writes dir/model.safetensors (tensors as given: the caller renames them to timm's names) and
// dir/config.json; creates dir.
void write_hf_dir(const nn::io::RawStateDict& sd, const ModelInfo& info, int64_t num_features, const std::string& dir);

}  // namespace mo::tools
