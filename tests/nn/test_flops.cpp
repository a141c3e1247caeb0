// test_flops.cpp: nn/flops (Eq. 6 for Transformers, the MAC/parameter walk over MambaOut) against the
// worked values of spec/mambaout.md §1.9 and §5.3, and the mo_flops command line (table, JSON, exit codes).
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "nn/flops.h"
#include "tests/test_util.h"

using namespace mo;
using namespace mo::nn;

namespace {

double gmacs(const std::string& name, int64_t img, bool count_norm) {
  MambaOut m(mambaout_config(name), 0, /*initialize=*/false);
  return static_cast<double>(count_mambaout(m, img, img).macs.total(count_norm)) / 1e9;
}

// Runs mo_flops with `args`; returns (exit code, stdout + stderr).
std::pair<int, std::string> run_tool(const std::string& args) {
  const std::string bin = MO_BINARY_DIR "/tools/mo_flops";
  if (!std::filesystem::exists(bin)) return {-1, "missing " + bin + " (build the mo_flops target)"};
  auto r = mo::test::run_command("'" + bin + "' " + args);
  return {r.rc, r.output};
}

}  // namespace

// ---- Eq. 6 ------------------------------------------------------------------------------------

TEST(Flops, TransformerBreakdownVitS) {
  const auto f = transformer_flops({384, 12, 196, false});
  EXPECT_EQ(f.qkv, 6LL * 384 * 384 * 196);
  EXPECT_EQ(f.qk, 2LL * 384 * 196 * 196);
  EXPECT_EQ(f.av, f.qk);
  EXPECT_EQ(f.proj, 2LL * 384 * 384 * 196);
  EXPECT_EQ(f.mlp, 16LL * 384 * 384 * 196);
  EXPECT_EQ(f.linear, 693633024);
  EXPECT_EQ(f.quadratic, 59006976);
  EXPECT_EQ(f.per_block, 752640000);
  EXPECT_EQ(f.total, 9031680000LL);
  EXPECT_NEAR(f.ratio, 0.0851, 5e-5);
  EXPECT_DOUBLE_EQ(f.ratio, 196.0 / (6 * 384));
  EXPECT_EQ(f.threshold, 2304);
}

TEST(Flops, TransformerWorkedTable) {
  // spec §5.3: (D, linear, quadratic, per block, ×12 in G, r)
  struct Row { int64_t d, lin, quad, block; double g12, r; };
  for (const Row& r : {Row{192, 173408256, 29503488, 202911744, 2.435, 0.170},
                       Row{768, 2774532096LL, 118013952, 2892546048LL, 34.71, 0.0425}}) {
    const auto f = transformer_flops({r.d, 12, 196, false});
    EXPECT_EQ(f.linear, r.lin) << r.d;
    EXPECT_EQ(f.quadratic, r.quad) << r.d;
    EXPECT_EQ(f.per_block, r.block) << r.d;
    EXPECT_NEAR(static_cast<double>(f.total) / 1e9, r.g12, 0.005) << r.d;
    EXPECT_NEAR(f.ratio, r.r, 5e-4) << r.d;
  }
  // class token (L = 197)
  EXPECT_EQ(transformer_flops({384, 12, 197, false}).per_block, 756782592);
  EXPECT_NEAR(transformer_flops({384, 12, 197, false}).total / 1e9, 9.081, 0.0005);
  EXPECT_EQ(transformer_flops({768, 12, 197, false}).per_block, 2907909120LL);
  EXPECT_NEAR(transformer_flops({768, 12, 197, false}).total / 1e9, 34.89, 0.005);
  EXPECT_EQ(transformer_flops({768, 12, 196, false}).threshold, 4608);
}

TEST(Flops, TransformerCausalHalvesQuadratic) {
  const auto full = transformer_flops({384, 12, 196, false});
  const auto c = transformer_flops({384, 12, 196, true});
  EXPECT_EQ(c.linear, full.linear);
  EXPECT_EQ(2 * c.quadratic, full.quadratic);
  EXPECT_EQ(c.per_block, 24LL * 384 * 384 * 196 + 2LL * 384 * 196 * 196);
  EXPECT_DOUBLE_EQ(c.ratio, 196.0 / (12 * 384));
  EXPECT_EQ(c.threshold, 12 * 384);
  // at L = τ the two terms are equal
  const auto at = transformer_flops({384, 1, 2304, false});
  EXPECT_EQ(at.linear, at.quadratic);
}

TEST(Flops, VitPresetsAndTokens) {
  const VitPreset* h = find_vit_preset("vit-h");
  ASSERT_NE(h, nullptr);
  EXPECT_EQ(h->dim, 1280);
  EXPECT_EQ(h->depth, 32);
  EXPECT_EQ(vit_tokens(h->img, h->img, h->patch, false), 256);
  const VitPreset* l = find_vit_preset("vit-l");
  ASSERT_NE(l, nullptr);
  EXPECT_EQ(l->dim, 1024);
  EXPECT_EQ(l->depth, 24);
  EXPECT_EQ(find_vit_preset("vit-x"), nullptr);
  EXPECT_EQ(vit_tokens(224, 224, 16, false), 196);
  EXPECT_EQ(vit_tokens(224, 224, 16, true), 197);
  EXPECT_EQ(vit_tokens(800, 1280, 16, false), 4000);
  EXPECT_THROW(vit_tokens(225, 224, 16, false), Error);
  EXPECT_THROW(transformer_flops({0, 12, 196, false}), Error);
  EXPECT_THROW(transformer_flops({1LL << 40, 12, 1LL << 20, false}), Error);  // overflow refused
}

// ---- MambaOut walk ----------------------------------------------------------------------------

TEST(Flops, MambaOutParamsAndMacs224) {
  struct Row { const char* name; int64_t params; double g, g_norm; };
  for (const Row& r : {Row{"mambaout_femto", 7304536, 1.148, 1.156}, Row{"mambaout_kobe", 9141208, 1.506, 1.515},
                       Row{"mambaout_tiny", 26545096, 4.470, 4.486}, Row{"mambaout_small", 48488072, 8.936, 8.960},
                       Row{"mambaout_base", 84813092, 15.794, 15.826}}) {
    MambaOut m(mambaout_config(r.name), 0, false);
    const ModelCount c = count_mambaout(m, 224, 224);
    EXPECT_EQ(c.params, r.params) << r.name;
    EXPECT_NEAR(c.macs.total(false) / 1e9, r.g, 0.0005) << r.name;
    EXPECT_NEAR(c.macs.total(true) / 1e9, r.g_norm, 0.0005) << r.name;
  }
}

TEST(Flops, MambaOutMacs288WithNorm) {
  // spec §1.9 "at 288" (these round the LN-inclusive counts; conv+linear alone gives 1.90/2.49/7.39/14.77/26.11)
  const std::vector<std::pair<std::string, double>> rows = {{"mambaout_femto", 1.91}, {"mambaout_kobe", 2.50},
                                                            {"mambaout_tiny", 7.41},  {"mambaout_small", 14.81},
                                                            {"mambaout_base", 26.16}};
  for (const auto& [name, g] : rows) EXPECT_NEAR(gmacs(name, 288, true), g, 0.005) << name;
  EXPECT_NEAR(gmacs("mambaout_tiny", 288, false), 7.39, 0.005);
}

TEST(Flops, MambaOutRwVariants224) {
  const std::vector<std::pair<std::string, double>> rows = {{"mambaout_small_rw", 8.936},
                                                            {"mambaout_base_short_rw", 16.281},
                                                            {"mambaout_base_tall_rw", 16.117},
                                                            {"mambaout_base_wide_rw", 17.752},
                                                            {"mambaout_base_plus_rw", 19.161}};
  for (const auto& [name, g] : rows) EXPECT_NEAR(gmacs(name, 224, false), g, 0.0005) << name;
  MambaOut m(mambaout_config("mambaout_base_plus_rw"), 0, false);
  EXPECT_EQ(count_mambaout(m, 224, 224).params, 101656552);
}

TEST(Flops, MambaOutTinyPerStageExact) {
  // Hand count for tiny at 224 (C = 96/192/384/576, h = 256/512/1024/1536, H = 56/28/14/7).
  MambaOut m(mambaout_config("mambaout_tiny"), 0, false);
  const ModelCount c = count_mambaout(m, 224, 224);
  ASSERT_EQ(c.parts.size(), 6u);
  EXPECT_EQ(c.parts[0].name, "stem");
  EXPECT_EQ(c.parts[5].name, "head");
  // stem: 112²·48·3·9 + 56²·96·48·9
  EXPECT_EQ(c.parts[0].macs.conv, 112LL * 112 * 48 * 27 + 56LL * 56 * 96 * 48 * 9);
  EXPECT_EQ(c.parts[0].macs.linear, 0);
  EXPECT_EQ(c.parts[0].macs.norm, 5LL * (112 * 112 * 48 + 56 * 56 * 96));
  // stage 1: 3 blocks, each fc1 C→2h, dwconv 49·C, fc2 h→C at 56²
  EXPECT_EQ(c.parts[1].macs.linear, 3LL * 56 * 56 * (96 * 512 + 256 * 96));
  EXPECT_EQ(c.parts[1].macs.conv, 3LL * 56 * 56 * 96 * 49);
  // stage 2 includes its downsampling conv 96→192 at 28²
  EXPECT_EQ(c.parts[2].macs.conv, 28LL * 28 * 192 * 96 * 9 + 3LL * 28 * 28 * 192 * 49);
  EXPECT_EQ(c.parts[4].out_h, 7);
  EXPECT_EQ(c.parts[4].out_c, 576);
  // head on the pooled vector: fc1 576→2304, fc2 2304→1000, LN(576) + LN(2304)
  EXPECT_EQ(c.parts[5].macs.linear, 576LL * 2304 + 2304LL * 1000);
  EXPECT_EQ(c.parts[5].macs.norm, 5LL * (576 + 2304));
  EXPECT_EQ(c.parts[5].out_c, 1000);
  int64_t params = 0;
  for (const auto& p : c.parts) params += p.params;
  EXPECT_EQ(params, 26545096);
  EXPECT_EQ(c.parts[1].params, 3 * 79328);  // spec §1.5: 3hC + 2h + 53C per block
}

TEST(Flops, MambaOutOddSizesAndClasses) {
  // ceil(H/2) per stride-2 conv: 225 → 113 → 57 → 29 → 15 → 8
  MambaOut m(mambaout_config("mambaout_femto"), 0, false);
  const ModelCount c = count_mambaout(m, 225, 225);
  EXPECT_EQ(c.parts[0].out_h, 57);
  EXPECT_EQ(c.parts[4].out_h, 8);
  const ModelCount r = count_mambaout(m, 160, 320);
  EXPECT_EQ(r.parts[4].out_h, 5);
  EXPECT_EQ(r.parts[4].out_w, 10);
  EXPECT_THROW(count_mambaout(m, 0, 224), Error);
  auto cfg = mambaout_config("mambaout_base_plus_rw");
  cfg.num_classes = 11821;
  MambaOut in12k(cfg, 0, false);
  EXPECT_EQ(count_mambaout(in12k, 224, 224).params, 134909485);
}

// ---- the mo_flops binary ----------------------------------------------------------------------

TEST(Flops, CliVitTable) {
  auto [rc, out] = run_tool("--arch vit-s");
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("752,640,000"), std::string::npos) << out;
  EXPECT_NE(out.find("9,031,680,000"), std::string::npos) << out;
  EXPECT_NE(out.find("59,006,976"), std::string::npos) << out;
  EXPECT_NE(out.find("= 0.08507"), std::string::npos) << out;
  EXPECT_NE(out.find("2,304 tokens"), std::string::npos) << out;
  EXPECT_NE(out.find("not long-sequence"), std::string::npos) << out;
  auto [rc2, cls] = run_tool("--arch vit-s --cls-token");
  ASSERT_EQ(rc2, 0) << cls;
  EXPECT_NE(cls.find("756,782,592"), std::string::npos) << cls;
  auto [rc3, causal] = run_tool("--arch vit-s --causal");
  ASSERT_EQ(rc3, 0) << causal;
  EXPECT_NE(causal.find("29,503,488"), std::string::npos) << causal;  // quadratic term halved
  // mo's own ViT beside Eq. 6 (L = 197): the per-block 2·MACs equal Eq. 6's 756,782,592; whole model 4.6 GMACs
  EXPECT_NE(out.find("mo's own ViT (vit_small_patch16_224, nn/vit.h): L = 197 tokens"), std::string::npos) << out;
  EXPECT_NE(out.find("378,391,296        756,782,592        756,782,592"), std::string::npos) << out;
  EXPECT_NE(out.find("4,598,882,304"), std::string::npos) << out;
  EXPECT_NE(causal.find("L(L+1)/2"), std::string::npos) << causal;
  EXPECT_NE(causal.find("7,489,152         14,978,304         14,902,656"), std::string::npos) << causal;  // Q·Kᵀ
  auto [rc4, js] = run_tool("--arch vit-ti --json");
  ASSERT_EQ(rc4, 0) << js;
  EXPECT_NE(js.find("\"mo_model\": {\"arch\": \"vit_tiny_patch16_224\", \"tokens\": 197, \"params\": 5717416"),
            std::string::npos) << js;
  auto [rc5, vb] = run_tool("--arch vit-b");  // no mo model for vit-b: Eq. 6 only
  ASSERT_EQ(rc5, 0) << vb;
  EXPECT_EQ(vb.find("mo's own ViT"), std::string::npos) << vb;
}

TEST(Flops, CliVitJsonAndCustom) {
  auto [rc, out] = run_tool("--arch vit-b --json");
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("\"arch\": \"vit-b\""), std::string::npos) << out;
  EXPECT_NE(out.find("\"total\": 2892546048"), std::string::npos) << out;
  EXPECT_NE(out.find("\"threshold\": 4608"), std::string::npos) << out;
  EXPECT_NE(out.find("\"long_sequence\": false"), std::string::npos) << out;
  EXPECT_EQ(out.front(), '{');
  // a custom shape by tokens, and the COCO-sized image of §5.2 (4000 tokens > τ = 2304 for ViT-S)
  auto [rc2, custom] = run_tool("--dim 192 --depth 12 --tokens 196 --json");
  ASSERT_EQ(rc2, 0) << custom;
  EXPECT_NE(custom.find("\"total\": 202911744"), std::string::npos) << custom;
  auto [rc3, coco] = run_tool("--dim 384 --depth 12 --img 800x1280 --patch 16 --json");
  ASSERT_EQ(rc3, 0) << coco;
  EXPECT_NE(coco.find("\"tokens\": 4000"), std::string::npos) << coco;
  EXPECT_NE(coco.find("\"long_sequence\": true"), std::string::npos) << coco;
}

TEST(Flops, CliMambaOut) {
  auto [rc, out] = run_tool("--arch mambaout_tiny");
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("26,545,096 parameters"), std::string::npos) << out;
  EXPECT_NE(out.find("(4.470 GMACs)"), std::string::npos) << out;
  for (const char* part : {"stem", "stage 1", "stage 2", "stage 3", "stage 4", "head", "total"})
    EXPECT_NE(out.find(part), std::string::npos) << part;
  auto [rc2, norm] = run_tool("--arch mambaout_base --img 288 --count-norm");
  ASSERT_EQ(rc2, 0) << norm;
  EXPECT_NE(norm.find("(26.158 GMACs)"), std::string::npos) << norm;
  EXPECT_NE(norm.find("norm FLOPs"), std::string::npos) << norm;
  auto [rc3, js] = run_tool("--arch mambaout_femto --json");
  ASSERT_EQ(rc3, 0) << js;
  EXPECT_NE(js.find("\"params\": 7304536"), std::string::npos) << js;
  EXPECT_NE(js.find("\"name\": \"stage 4\""), std::string::npos) << js;
  EXPECT_NE(js.find("\"output\": [288, 7, 7]"), std::string::npos) << js;
}

TEST(Flops, CliErrors) {
  auto [rc, out] = run_tool("--arch vit-q");
  EXPECT_EQ(rc, 2) << out;
  EXPECT_NE(out.find("unknown arch 'vit-q'"), std::string::npos) << out;
  EXPECT_NE(out.find("vit-ti"), std::string::npos) << out;
  EXPECT_NE(out.find("mambaout_base_plus_rw"), std::string::npos) << out;
  auto [rc2, flag] = run_tool("--arch vit-s --heads 6");
  EXPECT_EQ(rc2, 2) << flag;
  EXPECT_NE(flag.find("unknown option '--heads'"), std::string::npos) << flag;
  EXPECT_EQ(run_tool("--arch mambaout_tiny --causal").first, 2);
  EXPECT_EQ(run_tool("--arch vit-s --count-norm").first, 2);
  EXPECT_EQ(run_tool("--arch vit-s --img 225").first, 2);
  EXPECT_EQ(run_tool("--arch mambaout_tiny --img abc").first, 2);
  EXPECT_EQ(run_tool("--dim 384 --depth 12").first, 2);  // no tokens
  EXPECT_EQ(run_tool("--dim 384 --depth 12 --tokens 196 --img 224").first, 2);
  EXPECT_EQ(run_tool("").first, 2);
  EXPECT_EQ(run_tool("--arch").first, 2);
  EXPECT_EQ(run_tool("--help").first, 0);
}
