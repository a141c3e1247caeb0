// mo_flops: compute cost of Transformers (the MambaOut paper's Eq. 6) and of the MambaOut models
// (parameters and MACs counted by walking mo's own model); for vit-ti / vit-s also the MACs of mo's own
// ViT (nn/vit.h) beside Eq. 6. The counting lives in nn/flops.{h,cpp};
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
#include "nn/io/json_lite.h"

#include "autograd/parse.h"
#include "tools/common/cli.h"

using namespace mo;
using namespace mo::nn;

namespace {

using tools::UsageError;

std::string known_archs() {
  std::vector<std::string> names;
  for (const auto& p : vit_presets()) names.push_back(p.name);
  for (const auto& n : mambaout_names()) names.push_back(n);
  return fmt::format("{}", fmt::join(names, ", "));
}

// "224" or "800x1280" (height x width); false when it is neither, with positive integers.
bool parse_img(const std::string& v, std::pair<int64_t, int64_t>& hw) {
  auto whole = [](const std::string& t, int64_t& x) {
    const std::optional<int64_t> v = t.empty() || t[0] == '+' ? std::nullopt : parse_int(t);
    x = v.value_or(0);
    return x > 0;
  };
  const auto x = v.find('x');
  if (x == std::string::npos) return whole(v, hw.first) && whole(v, hw.second);
  return whole(v.substr(0, x), hw.first) && whole(v.substr(x + 1), hw.second);
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

std::string json_string(const std::string& s) { return nn::io::json_quote(s); }

struct Options {
  std::string arch;
  std::optional<std::pair<int64_t, int64_t>> img;
  std::optional<int64_t> patch, dim, depth, tokens, num_classes;
  bool cls_token = false, causal = false, count_norm = false, json = false;
  std::vector<std::string> given;  // the flags seen, for "does not apply" messages
  bool has(const std::string& f) const { return std::find(given.begin(), given.end(), f) != given.end(); }
};

// ---- Transformers -----------------------------------------------------------------------------

// mo's own ViT for a preset it has (vit-ti, vit-s) at a square image, counted from the model; nothing when
// the shape was customised (--dim/--depth/--tokens) or the image is not a square multiple of the patch.
std::optional<VitCount> mo_vit_count(const Options& o, const VitPreset* preset,
                                     const std::optional<std::pair<int64_t, int64_t>>& img, int64_t patch) {
  if (!preset || o.dim || o.depth || o.tokens || !img || img->first != img->second || img->first % patch != 0)
    return std::nullopt;
  const char* name = preset->name == "vit-ti" ? "vit_tiny_patch16_224" : preset->name == "vit-s" ? "vit_small_patch16_224" : nullptr;
  if (!name) return std::nullopt;
  VitConfig cfg = vit_config(name);
  cfg.img_size = img->first, cfg.patch_size = patch, cfg.causal = o.causal;
  return count_vit(VisionTransformer(cfg, 0, /*initialize=*/false));
}

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
  const std::optional<VitCount> mo = mo_vit_count(o, preset, img, patch);
  // Eq. 6 at mo's sequence length (its model has the class token), for the side-by-side rows
  const TransformerFlops fm = mo ? transformer_flops({s.dim, s.depth, mo->tokens, s.causal}) : TransformerFlops{};

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
                       "\"long_sequence\": {}",
                       f.total, g, f.ratio, f.threshold, long_seq);
    if (mo)
      out += fmt::format(", \"mo_model\": {{\"arch\": {}, \"tokens\": {}, \"params\": {}, \"per_block_macs\": {{\"qkv\": {}, "
                         "\"qk\": {}, \"av\": {}, \"proj\": {}, \"mlp\": {}, \"total\": {}}}, \"patch_embed_macs\": {}, "
                         "\"head_macs\": {}, \"total_macs\": {}, \"eq6_flops_same_tokens\": {}}}",
                         json_string(mo->arch), mo->tokens, mo->params, mo->qkv, mo->qk, mo->av, mo->proj, mo->mlp,
                         mo->per_block, mo->patch_embed, mo->head, mo->total, fm.total);
    out += "}\n";
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
  if (mo) {
    out += fmt::format("\nmo's own ViT ({}, nn/vit.h): L = {} tokens ({} patches + the class token), {} parameters\n"
                       "MACs walked from its layers, 2 FLOPs each, beside Eq. 6 at the same L{}\n\n",
                       mo->arch, mo->tokens, mo->tokens - 1, grouped(mo->params),
                       s.causal ? " (mo: the L(L+1)/2 pairs of the lower triangle with its diagonal; Eq. 6: L²/2)" : "");
    out += fmt::format("  {:<26} {:>16} {:>18} {:>18}\n", "per block", "MACs", "2·MACs", "Eq. 6 FLOPs");
    auto row3 = [&](const std::string& what, int64_t macs, int64_t eq6) {
      out += fmt::format("  {:<26} {:>16} {:>18}", what, grouped(macs), grouped(2 * macs));
      out += eq6 < 0 ? "\n" : fmt::format(" {:>18}\n", grouped(eq6));
    };
    row3("QKV projections", mo->qkv, fm.qkv);
    row3("attention map Q·Kᵀ", mo->qk, fm.qk);
    row3("A·V", mo->av, fm.av);
    row3("output projection", mo->proj, fm.proj);
    row3("MLP (D → 4D → D)", mo->mlp, fm.mlp);
    row3("total per block", mo->per_block, fm.per_block);
    row3("patch embedding", mo->patch_embed, -1);
    row3("head (class token)", mo->head, -1);
    row3(fmt::format("total ({} blocks + both)", mo->depth), mo->total, fm.total);
    out += fmt::format("  = {:.4g} GMACs, {:.4g} GFLOPs\n", static_cast<double>(mo->total) / 1e9,
                       2.0 * static_cast<double>(mo->total) / 1e9);
  }
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
  tools::Cli cli("mo_flops", "Compute cost of Transformers (the MambaOut paper's Eq. 6) and of the MambaOut models "
                             "(parameters and MACs).");
  CLI::App& app = cli.app;
  Options o;
  std::string img;
  int64_t patch = 0, dim = 0, depth = 0, tokens = 0, num_classes = 0;
  app.add_option("--arch", o.arch, "a ViT preset or a MambaOut model (the list below)")->type_name("NAME");
  app.add_option("--img,--img-size", img, "image size, square or height x width")
      ->type_name("N|HxW")
      ->check(CLI::Validator(
          [](std::string& v) {
            std::pair<int64_t, int64_t> hw;
            return parse_img(v, hw) ? std::string()
                                    : fmt::format("expected N or HxW with positive integers, got '{}'", v);
          },
          ""));
  app.add_option("--patch", patch, "ViT patch size (default: the preset's, else 16)")->check(tools::int_range(1));
  app.add_option("--dim", dim, "a custom transformer's width D")->check(tools::int_range(1));
  app.add_option("--depth", depth, "a custom transformer's number of blocks")->check(tools::int_range(1));
  app.add_option("--tokens", tokens, "sequence length L instead of --img/--patch")->check(tools::int_range(1));
  app.add_option("--num-classes", num_classes, "MambaOut classifier outputs (default 1000)")
      ->check(tools::int_range(1));
  app.add_flag("--cls-token", o.cls_token, "ViT: count a class token");
  app.add_flag("--causal", o.causal, "ViT: causal attention (half the attention map)");
  app.add_flag("--count-norm", o.count_norm, "MambaOut: add LayerNorm at 5 FLOPs per element (fvcore)");
  app.add_flag("--json", o.json, "machine-readable output");
  app.footer(fmt::format("Forms: --arch vit-ti|vit-s|vit-b|vit-l|vit-h [--img] [--patch] [--cls-token] [--causal];\n"
                         "       --dim D --depth N (--tokens L | --img N|HxW [--patch P] [--cls-token]) [--causal];\n"
                         "       --arch MAMBAOUT [--img] [--count-norm] [--num-classes K]\n"
                         "archs: {}\n{}",
                         known_archs(), app.get_footer()));
  if (auto rc = cli.parse(argc, argv)) return *rc;
  for (const CLI::Option* opt : app.get_options())
    if (opt->count() > 0) o.given.push_back(opt->get_name());
  if (!img.empty()) {
    std::pair<int64_t, int64_t> hw;
    parse_img(img, hw);  // checked with the option
    o.img = hw;
  }
  if (app.count("--patch")) o.patch = patch;
  if (app.count("--dim")) o.dim = dim;
  if (app.count("--depth")) o.depth = depth;
  if (app.count("--tokens")) o.tokens = tokens;
  if (app.count("--num-classes")) o.num_classes = num_classes;
  return cli.run([&] {
    if (o.arch.empty() && !o.dim)
      throw UsageError("need --arch NAME, or a custom transformer (--dim D --depth N --tokens L)");
    if (o.arch.empty() || find_vit_preset(o.arch)) return run_transformer(o);
    const auto names = mambaout_names();
    if (std::find(names.begin(), names.end(), o.arch) != names.end()) return run_mambaout(o);
    throw UsageError(fmt::format("unknown arch '{}'; known: {}", o.arch, known_archs()));
  });
}
