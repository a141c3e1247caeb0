// mo_convert: converts MambaOut weight files between PyTorch's torch.save (.pth/.pt/.bin/.pth.tar),
// safetensors and mo's own checkpoints (.mo), renaming keys between the official and timm layouts.
//
//   mo_convert IN OUT [--names official|timm|keep] [--entry KEY] [--format NAME]
//   mo_convert IN --info
//
// The input format is recognised from the file's first bytes; the output format from OUT's extension
// (or --format). Input naming is detected; --names picks the output's (default: official). --entry
// picks the weights out of a training checkpoint (default: 'state_dict', then 'model'); e.g.
// --entry state_dict_ema. The conversion is bit-exact and keeps each tensor's dtype (fp32/fp16/bf16...),
// except into .mo, which stores mo dtypes (fp16 becomes fp32).
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "nn/io/checkpoint_io.h"
#include "tools/common/checkpoint.h"

using namespace mo;
using namespace mo::nn::io;

namespace {

// mo's native checkpoint (tools/common/checkpoint.h) as a conversion format: only the model weights
// travel; a .mo written here has no optimizer/RNG state (training cannot resume from it, but mo_validate,
// mo_predict and fine-tuning can start from it).
void register_native_format() {
  register_format(
      {"mo",
       {".mo"},
       [](Bytes head) { return head.size() >= 8 && std::memcmp(head.data(), "MOCKPT", 6) == 0; },
       [](const std::string& path, const ReadOptions& opt) {
         MO_CHECK(opt.entry.empty(), "{}: --entry does not apply to mo checkpoints", path);
         tools::CheckpointState s = tools::load_checkpoint(path);
         RawStateDict sd;
         for (const auto& [n, t] : s.model) sd.tensors.emplace_back(n, raw_from_tensor(t));
         if (!s.model_name.empty()) sd.metadata.emplace_back("arch", s.model_name);
         sd.metadata.emplace_back("epoch", std::to_string(s.epoch));
         return sd;
       },
       [](const RawStateDict& sd, const std::string& path) {
         tools::CheckpointState s;
         for (const auto& [k, v] : sd.metadata)
           if (k == "arch") s.model_name = v;
         for (const auto& [n, t] : sd.tensors) s.model.emplace_back(n, tensor_from_raw(t));
         tools::save_checkpoint(path, s);
       }});
}

int usage(const char* msg) {
  std::fprintf(stderr,
               "%s%smo_convert IN OUT [--names official|timm|keep] [--entry KEY] [--format NAME]\n"
               "mo_convert IN --info\n"
               "formats: pth (.pth .pt .bin .ckpt .tar), safetensors (.safetensors), mo (.mo)\n",
               msg, *msg ? "\n" : "");
  return 2;
}

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

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> pos;
  std::string names = "official", entry, format;
  bool info = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&](std::string& dst) {
      if (i + 1 >= argc) return false;
      dst = argv[++i];
      return true;
    };
    if (a == "--names") {
      if (!value(names)) return usage("--names needs a value");
    } else if (a == "--entry") {
      if (!value(entry)) return usage("--entry needs a value");
    } else if (a == "--format") {
      if (!value(format)) return usage("--format needs a value");
    } else if (a == "--info") {
      info = true;
    } else if (a == "-h" || a == "--help") {
      return usage(""), 0;
    } else if (a.starts_with("--")) {
      return usage(("unknown option " + a).c_str());
    } else {
      pos.push_back(a);
    }
  }
  if (pos.size() != (info ? 1u : 2u)) return usage(info ? "--info takes one file" : "need IN and OUT");
  if (names != "official" && names != "timm" && names != "keep") return usage("--names: official, timm or keep");
  try {
    register_native_format();
    const std::string& in = pos[0];
    RawStateDict sd = read_checkpoint(in, ReadOptions{entry});
    std::printf("%s: %s, %s\n", in.c_str(), format_for_read(in).name.c_str(), describe(sd, in).c_str());
    for (const auto& [k, v] : sd.metadata) std::printf("  %s = %s\n", k.c_str(), v.c_str());
    if (info) {
      for (const auto& [n, t] : sd.tensors)
        std::printf("  %-48s %-9s %s\n", n.c_str(), wire_info(t.dtype).torch_dtype, shape_string(t.shape).c_str());
      return 0;
    }
    const std::string& out = pos[1];
    if (names != "keep") sd = rename_state_dict(sd, parse_naming(names), in);
    write_checkpoint(sd, out, format);
    std::printf("%s: %s, %s\n", out.c_str(), format_for_write(out, format).name.c_str(), describe(sd, out).c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mo_convert: %s\n", e.what());
    return 1;
  }
}
