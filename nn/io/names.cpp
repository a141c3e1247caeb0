// names.cpp: official <-> timm key mapping for MambaOut (see names.h and mambaout.md §2.2).
#include "nn/io/names.h"

#include "autograd/check.h"

namespace mo::nn::io {

namespace {

bool starts(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }

// If `key` is "<head><digits>.<rest>", returns true with the digits and the rest.
bool split_index(const std::string& key, const std::string& head, std::string& idx, std::string& rest) {
  if (!starts(key, head)) return false;
  size_t p = head.size(), q = p;
  while (q < key.size() && key[q] >= '0' && key[q] <= '9') ++q;
  if (q == p || q >= key.size() || key[q] != '.') return false;
  idx = key.substr(p, q - p);
  rest = key.substr(q + 1);
  return true;
}

}  // namespace

const char* naming_name(Naming n) {
  switch (n) {
    case Naming::official: return "official";
    case Naming::timm: return "timm";
    case Naming::unknown: return "unknown";
  }
  return "?";
}

Naming parse_naming(const std::string& s) {
  if (s == "official") return Naming::official;
  if (s == "timm") return Naming::timm;
  MO_FAIL("unknown naming '{}': expected 'official' or 'timm'", s);
}

Naming detect_naming(const std::vector<std::string>& keys, const std::string& what) {
  const std::string* off = nullptr;
  const std::string* tm = nullptr;
  for (const auto& k : keys) {
    if (!off && starts(k, "downsample_layers.")) off = &k;
    if (!tm && (starts(k, "stem.") || k.find(".blocks.") != std::string::npos || starts(k, "head.pre_logits.")))
      tm = &k;
  }
  MO_CHECK(!(off && tm), "{}: mixes official and timm key names ('{}' and '{}')", what, *off, *tm);
  return off ? Naming::official : tm ? Naming::timm : Naming::unknown;
}

std::string official_to_timm(const std::string& key) {
  std::string i, j, rest, rest2;
  if (split_index(key, "downsample_layers.", i, rest)) return i == "0" ? "stem." + rest : "stages." + i + ".downsample." + rest;
  if (split_index(key, "stages.", i, rest) && split_index(rest, "", j, rest2))
    return "stages." + i + ".blocks." + j + "." + rest2;
  if (starts(key, "norm.")) return "head." + key;
  if (starts(key, "head.fc1.")) return "head.pre_logits.fc." + key.substr(9);
  if (starts(key, "head.norm.")) return "head.pre_logits.norm." + key.substr(10);
  if (starts(key, "head.fc2.")) return "head.fc." + key.substr(9);
  return key;
}

std::string timm_to_official(const std::string& key) {
  std::string i, j, rest, rest2;
  if (starts(key, "stem.")) return "downsample_layers.0." + key.substr(5);
  if (split_index(key, "stages.", i, rest)) {
    if (starts(rest, "downsample.")) return "downsample_layers." + i + "." + rest.substr(11);
    if (split_index(rest, "blocks.", j, rest2)) return "stages." + i + "." + j + "." + rest2;
    return key;
  }
  if (starts(key, "head.norm.")) return key.substr(5);
  if (starts(key, "head.pre_logits.fc.")) return "head.fc1." + key.substr(19);
  if (starts(key, "head.pre_logits.norm.")) return "head.norm." + key.substr(21);
  if (starts(key, "head.fc.")) return "head.fc2." + key.substr(8);
  return key;
}

std::string convert_name(const std::string& key, Naming from, Naming to) {
  if (from == to || from == Naming::unknown || to == Naming::unknown) return key;
  return to == Naming::timm ? official_to_timm(key) : timm_to_official(key);
}

std::string strip_wrapper_prefix(const std::string& key) {
  std::string k = key;
  while (true) {
    if (starts(k, "module.")) k = k.substr(7);
    else if (starts(k, "_orig_mod.")) k = k.substr(10);
    else return k;
  }
}

}  // namespace mo::nn::io
