// mo_flops: compute cost of Transformers (the MambaOut paper's Eq. 6) and of the MambaOut models
// (parameters and MACs counted by walking mo's own model). The counting lives in nn/flops.{h,cpp};
// this file parses the command line and prints a table (default) or JSON (--json).
//
//   mo_flops --arch vit-ti|vit-s|vit-b|vit-l|vit-h [--img N|HxW] [--patch P] [--cls-token] [--causal]
//   mo_flops --dim D --depth N (--tokens L | --img N|HxW [--patch P] [--cls-token]) [--causal]
//   mo_flops --arch mambaout_tiny [--img N|HxW] [--count-norm] [--num-classes K]
//   ... [--json]
//
// Exit codes: 0 ok, 2 usage errors (unknown flag or arch, bad value), 1 anything else.
#include <algorithm>
#include <charconv>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "nn/flops.h"

using namespace mo;
using namespace mo::nn;

namespace {

struct UsageError : Error {
  using Error::Error;
};

std::string known_archs() {
  std::vector<std::string> names;
  for (const auto& p : vit_presets()) names.push_back(p.name);
  for (const auto& n : mambaout_names()) names.push_back(n);
  return fmt::format("{}", fmt::join(names, ", "));
}

void print_usage(std::FILE* f) {
  std::fprintf(f,
               "usage:\n"
               "  mo_flops --arch vit-ti|vit-s|vit-b|vit-l|vit-h [--img N|HxW] [--patch P] [--cls-token] [--causal]\n"
               "  mo_flops --dim D --depth N (--tokens L | --img N|HxW [--patch P] [--cls-token]) [--causal]\n"
               "  mo_flops --arch MAMBAOUT [--img N|HxW] [--count-norm] [--num-classes K]\n"
               "  add --json for machine-readable output\n"
               "archs: %s\n",
               known_archs().c_str());
}

int64_t parse_positive(const std::string& flag, const std::string& v) {
  int64_t x = 0;
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), x);
  if (ec != std::errc() || end != v.data() + v.size() || x <= 0)
    throw UsageError(fmt::format("{} expects a positive integer, got '{}'", flag, v));
  return x;
}

// "224" or "800x1280" (height x width).
std::pair<int64_t, int64_t> parse_img(const std::string& v) {
  auto x = v.find('x');
  if (x == std::string::npos) {
    int64_t s = parse_positive("--img", v);
    return {s, s};
  }
  try {
    return {parse_positive("--img", v.substr(0, x)), parse_positive("--img", v.substr(x + 1))};
  } catch (const UsageError&) {  // name the whole value, not the half that failed
    throw UsageError(fmt::format("--img expects N or HxW with positive integers, got '{}'", v));
  }
}

// 9031680000 -> "9,031,680,000"
std::string grouped(int64_t v) {
  std::string d = std::to_string(v < 0 ? -v : v), out;
  for (size_t i = 0; i < d.size(); ++i) {
    if (i > 0 && (d.size() - i) % 3 == 0) out += ',';
    out += d[i];
  }
  return v < 0 ? "-" + out : out;
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\', out += c;
    else if (static_cast<unsigned char>(c) < 0x20) out += fmt::format("\\u{:04x}", static_cast<int>(c));
    else out += c;
  }
  return out + "\"";
}

struct Options {
  std::string arch;
  std::optional<std::pair<int64_t, int64_t>> img;
  std::optional<int64_t> patch, dim, depth, tokens, num_classes;
  bool cls_token = false, causal = false, count_norm = false, json = false;
  std::vector<std::string> given;  // the flags seen, for "does not apply" messages
  bool has(const std::string& f) const { return std::find(given.begin(), given.end(), f) != given.end(); }
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw UsageError(fmt::format("{} needs a value", a));
      return argv[++i];
    };
    if (a == "--arch") o.arch = value();
    else if (a == "--img") o.img = parse_img(value());
    else if (a == "--patch") o.patch = parse_positive(a, value());
    else if (a == "--dim") o.dim = parse_positive(a, value());
    else if (a == "--depth") o.depth = parse_positive(a, value());
    else if (a == "--tokens") o.tokens = parse_positive(a, value());
    else if (a == "--num-classes") o.num_classes = parse_positive(a, value());
    else if (a == "--cls-token") o.cls_token = true;
    else if (a == "--causal") o.causal = true;
    else if (a == "--count-norm") o.count_norm = true;
    else if (a == "--json") o.json = true;
    else throw UsageError(fmt::format("unknown option '{}'", a));
    o.given.push_back(a);
  }
  return o;
}

// ---- Transformers -----------------------------------------------------------------------------

int run_transformer(const Options& o) {
  for (const char* f : {"--count-norm", "--num-classes"})
    if (o.has(f)) throw UsageError(fmt::format("{} applies to MambaOut models, not to transformers", f));
  const VitPreset* preset = o.arch.empty() ? nullptr : find_vit_preset(o.arch);
  TransformerShape s;
  s.causal = o.causal;
  if (preset) s.dim = preset->dim, s.depth = preset->depth;
  if (o.dim) s.dim = *o.dim;
  if (o.depth) s.depth = *o.depth;
  if (!preset && !o.depth) throw UsageError("a custom transformer needs --depth");
  std::optional<std::pair<int64_t, int64_t>> img = o.img;
  int64_t patch = o.patch.value_or(preset ? preset->patch : 16);
  std::string token_note;
  if (o.tokens) {
    for (const char* f : {"--img", "--patch", "--cls-token"})
      if (o.has(f)) throw UsageError(fmt::format("--tokens and {} exclude each other", f));
    s.tokens = *o.tokens;
  } else {
    if (!img && preset) img = std::pair{preset->img, preset->img};
    if (!img) throw UsageError("a custom transformer needs --tokens L or --img N [--patch P]");
    try {
      s.tokens = vit_tokens(img->first, img->second, patch, o.cls_token);
    } catch (const Error& e) {
      throw UsageError(e.what());
    }
    token_note = fmt::format(" ({}x{} image, patch {}{})", img->first, img->second, patch,
                             o.cls_token ? ", + class token" : "");
  }
  const TransformerFlops f = transformer_flops(s);
  const std::string name = preset ? preset->name : "custom";
  const bool long_seq = s.tokens > f.threshold;
  const double g = static_cast<double>(f.total) / 1e9;

  if (o.json) {
    std::string out = "{";
    out += fmt::format("\"arch\": {}, \"dim\": {}, \"depth\": {}, \"tokens\": {}, \"causal\": {}, ", json_string(name),
                       s.dim, s.depth, s.tokens, s.causal);
    if (!o.tokens)
      out += fmt::format("\"img\": [{}, {}], \"patch\": {}, \"cls_token\": {}, ", img->first, img->second, patch,
                         o.cls_token);
    out += fmt::format(
        "\"per_block\": {{\"qkv\": {}, \"qk\": {}, \"av\": {}, \"proj\": {}, \"mlp\": {}, \"linear\": {}, "
        "\"quadratic\": {}, \"total\": {}}}, ",
        f.qkv, f.qk, f.av, f.proj, f.mlp, f.linear, f.quadratic, f.per_block);
    out += fmt::format("\"total_flops\": {}, \"gflops\": {:.6g}, \"ratio\": {:.6g}, \"threshold\": {}, "
                       "\"long_sequence\": {}}}\n",
                       f.total, g, f.ratio, f.threshold, long_seq);
    std::fputs(out.c_str(), stdout);
    return 0;
  }

  const char* half = s.causal ? "" : "2·";
  const char* quad = s.causal ? "2·D·L²" : "4·D·L²";
  std::string out;
  out += fmt::format("{}: D = {}, {} blocks, L = {} tokens{}, {} attention\n", name, s.dim, s.depth, s.tokens,
                     token_note, s.causal ? "causal" : "fully-visible");
  out += "FLOPs by the MambaOut paper's Eq. 6 (1 multiply or 1 add = 1 FLOP; softmax, norms, activations, biases "
         "and the patch embedding/classifier ignored)\n\n";
  auto row = [&](const std::string& what, int64_t v, const std::string& formula) {
    out += fmt::format("  {:<26} {:>20}   {}\n", what, grouped(v), formula);
  };
  out += fmt::format("  {:<26} {:>20}   {}\n", "per block", "FLOPs", "formula");
  row("QKV projections", f.qkv, "6·D²·L");
  row("attention map Q·Kᵀ", f.qk, fmt::format("{}D·L²{}", half, s.causal ? " (causal: half)" : ""));
  row("A·V", f.av, fmt::format("{}D·L²{}", half, s.causal ? " (causal: half)" : ""));
  row("output projection", f.proj, "2·D²·L");
  row("MLP (D → 4D → D)", f.mlp, "16·D²·L");
  row("linear term", f.linear, "24·D²·L");
  row("quadratic term", f.quadratic, quad);
  row("total per block", f.per_block, fmt::format("24·D²·L + {}", quad));
  row(fmt::format("total ({} blocks)", s.depth), f.total,
      fmt::format("{:.4g} GFLOPs ({:.4g} GMACs)", g, g / 2));
  out += fmt::format("\nr = quadratic / linear = L/({}D) = {:.4g}\n", s.causal ? 12 : 6, f.ratio);
  const char* cmp = s.tokens > f.threshold ? ">" : s.tokens == f.threshold ? "=" : "<";
  out += fmt::format("τ = {}D = {} tokens: L = {} {} τ, {}\n", s.causal ? 12 : 6, grouped(f.threshold), s.tokens, cmp,
                     long_seq ? "long-sequence (attention dominates)" : "not long-sequence");
  std::fputs(out.c_str(), stdout);
  return 0;
}

// ---- MambaOut ---------------------------------------------------------------------------------

int run_mambaout(const Options& o) {
  for (const char* f : {"--patch", "--cls-token", "--causal", "--dim", "--depth", "--tokens"})
    if (o.has(f)) throw UsageError(fmt::format("{} applies to transformers, not to {}", f, o.arch));
  MambaOutConfig cfg = mambaout_config(o.arch);
  if (o.num_classes) cfg.num_classes = *o.num_classes;
  auto [h, w] = o.img.value_or(std::pair<int64_t, int64_t>{224, 224});
  MambaOut m(cfg, 0, /*initialize=*/false);
  const ModelCount c = count_mambaout(m, h, w);
  const int64_t total = c.macs.total(o.count_norm);
  const double g = static_cast<double>(total) / 1e9;

  if (o.json) {
    std::string out = "{";
    out += fmt::format("\"arch\": {}, \"img\": [{}, {}], \"num_classes\": {}, \"count_norm\": {}, \"params\": {}, ",
                       json_string(c.arch), h, w, cfg.num_classes, o.count_norm, c.params);
    out += fmt::format("\"conv_macs\": {}, \"linear_macs\": {}, \"norm_flops\": {}, \"macs\": {}, \"gmacs\": {:.6g}, ",
                       c.macs.conv, c.macs.linear, c.macs.norm, total, g);
    out += "\"parts\": [";
    for (size_t i = 0; i < c.parts.size(); ++i) {
      const PartCount& p = c.parts[i];
      out += fmt::format(
          "{}{{\"name\": {}, \"params\": {}, \"conv_macs\": {}, \"linear_macs\": {}, \"norm_flops\": {}, \"macs\": {}, "
          "\"output\": [{}, {}, {}]}}",
          i ? ", " : "", json_string(p.name), p.params, p.macs.conv, p.macs.linear, p.macs.norm,
          p.macs.total(o.count_norm), p.out_c, p.out_h, p.out_w);
    }
    out += "]}\n";
    std::fputs(out.c_str(), stdout);
    return 0;
  }

  std::string out;
  out += fmt::format("{} at {}x{}: {} parameters, {} MACs ({:.3f} GMACs)\n", c.arch, h, w, grouped(c.params),
                     grouped(total), g);
  out += o.count_norm ? "MACs of every Conv2d, depthwise conv and Linear, plus LayerNorm at 5 FLOPs per element "
                        "(fvcore)\n\n"
                      : "MACs of every Conv2d, depthwise conv and Linear (LayerNorm not counted; --count-norm adds it)\n\n";
  auto line = [&](const std::string& part, const std::string& shape, const std::string& params, const std::string& conv,
                  const std::string& lin, const std::string& norm, const std::string& macs, const std::string& share) {
    out += fmt::format("{:<9} {:>12} {:>12} {:>15} {:>15} ", part, shape, params, conv, lin);
    if (o.count_norm) out += fmt::format("{:>13} ", norm);
    out += fmt::format("{:>15} {:>7}\n", macs, share);
  };
  line("part", "output", "params", "conv MACs", "linear MACs", "norm FLOPs", "MACs", "share");
  for (const PartCount& p : c.parts) {
    const int64_t t = p.macs.total(o.count_norm);
    const std::string shape = p.out_h == 1 && p.out_w == 1 ? std::to_string(p.out_c)
                                                            : fmt::format("{}x{}x{}", p.out_c, p.out_h, p.out_w);
    line(p.name, shape, grouped(p.params), grouped(p.macs.conv), grouped(p.macs.linear), grouped(p.macs.norm),
         grouped(t), fmt::format("{:.1f}%", 100.0 * static_cast<double>(t) / static_cast<double>(total)));
  }
  line("total", "", grouped(c.params), grouped(c.macs.conv), grouped(c.macs.linear), grouped(c.macs.norm),
       grouped(total), "100.0%");
  std::fputs(out.c_str(), stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "-h" || a == "--help") return print_usage(stdout), 0;
  }
  try {
    const Options o = parse(argc, argv);
    if (o.arch.empty() && !o.dim)
      throw UsageError("need --arch NAME, or a custom transformer (--dim D --depth N --tokens L)");
    if (o.arch.empty() || find_vit_preset(o.arch)) return run_transformer(o);
    const auto names = mambaout_names();
    if (std::find(names.begin(), names.end(), o.arch) != names.end()) return run_mambaout(o);
    throw UsageError(fmt::format("unknown arch '{}'; known: {}", o.arch, known_archs()));
  } catch (const UsageError& e) {
    std::fprintf(stderr, "mo_flops: %s\n(mo_flops --help lists the options)\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mo_flops: %s\n", e.what());
    return 1;
  }
}
