// names.h: MambaOut state_dict naming. The official repository (yuweihao/MambaOut) and timm use
// different keys for the same tensors (mambaout.md §2.2); this file detects which one a checkpoint uses
// and renames keys between them. The rename is a pure key map: shapes and layouts are identical.
//   official                        timm
//   downsample_layers.0.*           stem.*
//   downsample_layers.S.*  (S>=1)   stages.S.downsample.*
//   stages.S.J.*                    stages.S.blocks.J.*
//   norm.*                          head.norm.*
//   head.fc1.* / head.norm.* / head.fc2.*   head.pre_logits.fc.* / head.pre_logits.norm.* / head.fc.*
// Keys matching no rule are left unchanged. Wrapper prefixes ("module." from DDP, "_orig_mod." from
// torch.compile) are stripped before anything else.
#pragma once
#include <string>
#include <vector>

namespace mo::nn::io {

enum class Naming { official, timm, unknown };

const char* naming_name(Naming n);              // "official", "timm", "unknown"
Naming parse_naming(const std::string& s);      // throws on anything but official|timm

// official if any key starts with "downsample_layers.", timm if any starts with "stem." or has
// ".blocks." or "head.pre_logits."; both at once is an error naming one key of each; neither = unknown.
Naming detect_naming(const std::vector<std::string>& keys, const std::string& what = "state_dict");

std::string official_to_timm(const std::string& key);
std::string timm_to_official(const std::string& key);
// Renames from `from` to `to`; identity when they are equal or either is unknown.
std::string convert_name(const std::string& key, Naming from, Naming to);

// "module.stem.conv1.weight" -> "stem.conv1.weight" (repeatedly, for nested wrappers).
std::string strip_wrapper_prefix(const std::string& key);

}  // namespace mo::nn::io
