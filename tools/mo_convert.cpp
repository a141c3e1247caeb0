// mo_convert: converts MambaOut and ViT weight files between PyTorch's torch.save (.pth/.pt/.bin/.pth.tar),
// safetensors and mo's own checkpoints (.mo), renaming MambaOut keys between the official and timm layouts
// (a ViT's keys are timm's in every output).
//
//   mo_convert IN OUT [--names official|timm|keep] [--entry KEY] [--format NAME] [--arch NAME] [--img-size N]
//   mo_convert IN model.onnx [--onnx-dtype fp32|fp16]     ONNX (nn/io/onnx_export.h)
//   mo_convert IN --hf-dir DIR                            DIR/model.safetensors + DIR/config.json (timm)
//   mo_convert IN --info
//
// IN may be a file or such a DIR. Every output carries what the input says about the model
// (tools/engine/model_info.h: architecture, classes, class names, eval settings); --arch names the
// architecture of files that do not say, --img-size sets the eval image size recorded.
// The input format is recognised from the file's first bytes; the output format from OUT's extension
// (or --format). Input naming is detected; --names picks the output's (default: official). --entry
// picks the weights out of a training checkpoint (default: 'state_dict', then 'model'); e.g.
// --entry state_dict_ema. The conversion is bit-exact and keeps each tensor's dtype (fp32/fp16/bf16...),
// except into .mo, which stores mo dtypes (fp16 becomes fp32).
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "nn/io/checkpoint_io.h"

#include "autograd/parse.h"
#include "nn/io/onnx_export.h"
#include "nn/vit.h"
#include "tools/common/cli.h"
#include "tools/common/inference.h"
#include "tools/engine/model_info.h"
#include "tools/engine/weights.h"

using namespace mo;
using namespace mo::nn::io;

namespace {

std::string describe(const RawStateDict& sd, const std::string& what) {
  std::vector<std::string> keys;
  std::map<std::string, int64_t> dtypes;
  int64_t numel = 0;
  for (const auto& [n, t] : sd.tensors) {
    keys.push_back(n);
    dtypes[wire_info(t.dtype).torch_dtype] += 1;
    numel += t.numel();
  }
  std::string dt;
  for (const auto& [k, v] : dtypes) dt += fmt::format("{}{} {}", dt.empty() ? "" : ", ", v, k);
  return fmt::format("{} tensors ({}), {} values, {} names", sd.tensors.size(), dt.empty() ? "none" : dt, numel,
                     naming_name(detect_naming(keys, what)));
}

// `path` ends with `ext` (lower case, with the dot), in any case.
bool has_extension(const std::string& path, const std::string& ext) {
  if (path.size() < ext.size()) return false;
  std::string tail = path.substr(path.size() - ext.size());
  for (char& c : tail) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return tail == ext;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> pos;
  std::string names = "official", entry, format, arch, onnx_dtype = "fp32", hf_dir;
  int64_t img_size = 0;
  bool info = false;
  tools::Cli cli("mo_convert",
                 "Converts MambaOut and ViT weight files between torch.save (.pth .pt .bin .ckpt .tar), safetensors "
                 "and mo's .mo, and exports ONNX (.onnx) and timm folders (--hf-dir). IN may also be a "
                 "folder written by --hf-dir.\n  mo_convert IN OUT    mo_convert IN --hf-dir DIR    mo_convert IN --info");
  cli.app.add_option("files", pos, "IN [OUT]")->expected(1, 2);
  cli.app.add_option("--names", names, "key names of the output")->check(tools::one_of({"official", "timm", "keep"}))
      ->capture_default_str();
  cli.app.add_option("--entry", entry, "the weights inside a training checkpoint (default: state_dict, then model; "
                     "e.g. state_dict_ema)");
  cli.app.add_option("--format", format, "output format when OUT's extension does not say (pth, safetensors, mo, onnx)");
  cli.app.add_option("--arch", arch, "the architecture, for files that do not carry one");
  cli.app.add_option("--img-size", img_size, "eval image size to record in the output")
      ->check(tools::int_range(16, 8192));
  cli.app.add_option("--onnx-dtype", onnx_dtype, "ONNX weights and activations")->check(tools::one_of({"fp32", "fp16"}))
      ->capture_default_str();
  cli.app.add_option("--hf-dir", hf_dir, "write DIR/model.safetensors (timm names) + DIR/config.json (IN only)");
  cli.app.add_flag("--info", info, "list IN's tensors and metadata (IN only)");
  if (auto rc = cli.parse(argc, argv)) return *rc;
  return cli.run([&]() -> int {
    const bool one = info || !hf_dir.empty();
    if (pos.size() != (one ? 1u : 2u))
      throw tools::UsageError(info ? "--info takes one file" : one ? "--hf-dir takes IN only" : "need IN and OUT");
    if (info && !hf_dir.empty()) throw tools::UsageError("--info and --hf-dir do not go together");
    tools::register_mo_format();
    const std::string& in = pos[0];
    const bool in_dir = tools::is_hf_dir(in);
    MO_CHECK(!in_dir || entry.empty(), "{}: --entry does not apply to a Hugging Face folder", in);
    RawStateDict sd = in_dir ? tools::read_hf_dir(in) : read_checkpoint(in, ReadOptions{entry});
    if (!arch.empty()) {
      tools::check_model_name(arch, "--arch");
      for (const auto& [k, v] : sd.metadata)
        if (k == "arch" && v != arch) std::printf("note: --arch %s replaces the file's arch %s\n", arch.c_str(), v.c_str());
      tools::set_metadata(sd.metadata, "arch", arch);
    }
    std::printf("%s: %s, %s\n", in.c_str(), in_dir ? "hf-dir" : format_for_read(in).name.c_str(),
                describe(sd, in).c_str());
    for (const auto& [k, v] : sd.metadata) std::printf("  %s = %s\n", k.c_str(), v.c_str());
    if (info) {
      for (const auto& [n, t] : sd.tensors)
        std::printf("  %-48s %-9s %s\n", n.c_str(), wire_info(t.dtype).torch_dtype, shape_string(t.shape).c_str());
      return 0;
    }
    // What the output says about the model: the input's facts, completed (classes from the classifier,
    // settings not carried: mo's defaults), --img-size applied.
    tools::ModelInfo mi;
    for (const auto& [k, v] : sd.metadata)
      if (k == "arch") mi.arch = v;
    mi.num_classes = tools::classifier_rows(sd, in);
    const tools::CarriedInfo carried = tools::carried_info(sd.metadata, in);
    mi.class_names = carried.class_names;
    mi.img_size = img_size > 0 ? img_size : carried.img_size.value_or(mi.img_size);
    mi.crop_pct = carried.crop_pct.value_or(mi.crop_pct);
    mi.interpolation = carried.interpolation.value_or(mi.interpolation);
    if (carried.mean && carried.std) mi.mean = *carried.mean, mi.std = *carried.std;
    mi.attention = carried.attention.value_or("");
    MO_CHECK(mi.attention != "causal" || mi.arch.empty() || nn::is_vit_name(mi.arch),
             "{}: metadata 'attention' = 'causal' applies to ViT models only, not to {}", in, mi.arch);
    if (nn::is_vit_name(mi.arch)) {  // a ViT takes the one input size its position embedding was made for
      const int64_t own = nn::vit_config(mi.arch).img_size;
      if (img_size <= 0 && !carried.img_size) mi.img_size = own;
      MO_CHECK(mi.img_size == own, "{} takes {} px images only (its position embedding is fixed), not {} px ({})",
               mi.arch, own, mi.img_size, img_size > 0 ? "--img-size" : in + "'s img_size");
    }
    MO_CHECK(mi.class_names.empty() || static_cast<int64_t>(mi.class_names.size()) == mi.num_classes,
             "{}: {} class names for {} classifier rows", in, mi.class_names.size(), mi.num_classes);
    for (const auto& [k, v] : tools::info_to_metadata(mi)) tools::set_metadata(sd.metadata, k, v);

    // The model itself, for the outputs that need it (and to check that the weights fit the architecture).
    auto build = [&] {
      MO_CHECK(!mi.arch.empty(), "'{}' does not say which model it holds: name it with --arch (one of {}, {})", in,
               fmt::join(nn::mambaout_names(), ", "), fmt::join(nn::vit_names(), ", "));
      return tools::model_from_state_dict(sd, in, mi.arch);
    };
    if (!hf_dir.empty()) {  // timm's names and config.json
      tools::LoadedModel m = build();
      RawStateDict timm = rename_state_dict(sd, Naming::timm, in);
      tools::write_hf_dir(timm, mi, tools::num_features(*m.model), hf_dir);
      std::printf("%s: model.safetensors (timm names) + config.json, %s\n", hf_dir.c_str(), describe(timm, hf_dir).c_str());
      return 0;
    }
    const std::string& out = pos[1];
    if (format == "onnx" || (format.empty() && has_extension(out, ".onnx"))) {
      tools::LoadedModel m = build();
      OnnxExportOptions o;
      o.dtype = parse_onnx_dtype(onnx_dtype);
      o.metadata = tools::info_to_metadata(mi);
      o.metadata.emplace_back("input", "input (batch, 3, height, width) float RGB, NCHW: resize the shorter side to "
                                       "img_size / crop_pct (interpolation), centre-crop img_size, then (x / 255 - mean) / std");
      o.metadata.emplace_back("output", fmt::format("logits (batch, {})", mi.num_classes));
      if (const auto* vit = dynamic_cast<const nn::VisionTransformer*>(m.model.get())) export_onnx(*vit, out, o);
      else export_onnx(dynamic_cast<const nn::MambaOut&>(*m.model), out, o);
      std::printf("%s: onnx opset %d, %s, %s\n", out.c_str(), kOnnxOpset, onnx_dtype_name(o.dtype), m.summary.c_str());
      return 0;
    }
    if (onnx_dtype != "fp32") throw tools::UsageError("--onnx-dtype applies to .onnx outputs only");
    if (names != "keep") sd = rename_state_dict(sd, parse_naming(names), in);
    if (format == "safetensors" || (format.empty() && has_extension(out, ".safetensors")))
      tools::set_metadata(sd.metadata, "format", "pt");  // what Hugging Face's loaders look for
    write_checkpoint(sd, out, format);
    std::printf("%s: %s, %s\n", out.c_str(), format_for_write(out, format).name.c_str(), describe(sd, out).c_str());
    return 0;
  });
}
