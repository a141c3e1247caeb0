// test_onnx_export.cpp: the ONNX files of nn/io/onnx_export.h run in onnxruntime (scripts/io/onnx_run.py)
// and give mo's logits: fp32 within 1e-4 relative for mambaout_femto and mambaout_tiny at 224 px with
// batch 2 (the batch is symbolic), another image size from the same file, an rw variant (SiLU, LayerScale,
// norm-first downsampling, no identity split), fp16 within a looser bound; metadata and dynamic
// dimensions as onnxruntime reads them; onnx.checker's full check where the onnx package is installed;
// a ViT, full and causal, fp32 and fp16; errors naming the value or path.
#include <gtest/gtest.h>

#include <fstream>

#include "autograd/graph.h"
#include "nn/io/json_lite.h"
#include "nn/io/onnx_export.h"
#include "nn/mambaout.h"
#include "nn/vit.h"
#include "tests/nn/io/onnx_test_util.h"
#include "tests/test_util.h"

using namespace mo;
using namespace mo::nn::io;
using mo::test::tmp_path;

namespace {

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// Exports `m`, runs batch x through onnxruntime and returns its logits (and the --info JSON).
template <class Model>
Tensor ort_logits(const Model& m, const Tensor& x, const OnnxExportOptions& opt, const std::string& tag,
                  Json* info = nullptr) {
  const std::string model = tmp_path(tag + ".onnx"), in = tmp_path(tag + "_x.npy"), out = tmp_path(tag + "_y.npy"),
                    js = tmp_path(tag + "_info.json");
  export_onnx(m, model, opt);
  mo::test::save_npy(in, x);
  auto r = onnx_test::onnx_run(model, in, out, js);
  EXPECT_EQ(r.rc, 0) << r.output;
  if (r.rc != 0) return Tensor();
  if (info) *info = parse_json(slurp(js), js);
  return mo::test::load_npy(out);
}

template <class Model>
Tensor mo_logits(const Model& m, const Tensor& x) {
  NoGradGuard g;
  return m.forward(x);
}

void expect_matches(const std::string& arch, int64_t res, double tol) {
  SCOPED_TRACE(arch);
  nn::MambaOut m(nn::mambaout_config(arch), /*init_seed=*/7);
  m.eval();
  Tensor x = mo::test::randn({2, 3, res, res}, 11);
  Tensor ref = mo_logits(m, x);
  Json info;
  Tensor y = ort_logits(m, x, {}, arch, &info);
  ASSERT_TRUE(y.defined());
  ASSERT_EQ(y.shape(), ref.shape());
  const double err = mo::test::rel_error(y, ref);
  EXPECT_LE(err, tol) << arch << " at " << res << " px";
  std::printf("%s %lld px fp32: max relative error %.3g\n", arch.c_str(), static_cast<long long>(res), err);
  // the input's batch, height and width are symbolic; the output's class count is fixed
  const Json* shape = info.get("input")->get("shape");
  ASSERT_EQ(shape->array.size(), 4u);
  EXPECT_EQ(shape->array[0].s, "batch");
  EXPECT_EQ(shape->array[1].i, 3);
  EXPECT_EQ(shape->array[2].s, "height");
  EXPECT_EQ(shape->array[3].s, "width");
  EXPECT_EQ(info.get("output")->get("shape")->array[1].i, 1000);
  EXPECT_EQ(info.get("producer")->s, "mo");
  // onnx.checker (full_check) accepted the file, where the onnx package is installed
  const Json* checked = info.get("checked");
  ASSERT_NE(checked, nullptr);
  if (checked->kind == Json::Kind::boolean) {
    std::printf("onnx package not installed: onnx.checker not run\n");
  } else {
    EXPECT_EQ(checked->get("ir_version")->i, kOnnxIrVersion);
    EXPECT_EQ(checked->get("opset")->array[0].array[1].i, kOnnxOpset);
  }
}

}  // namespace

TEST(OnnxExport, FemtoFp32MatchesMoLogits) {
  MO_SKIP_WITHOUT_ONNXRUNTIME();
  expect_matches("mambaout_femto", 224, 1e-4);
}

TEST(OnnxExport, TinyFp32MatchesMoLogits) {
  MO_SKIP_WITHOUT_ONNXRUNTIME();
  expect_matches("mambaout_tiny", 224, 1e-4);
}

// One file, several image sizes and batches: height and width are not baked into the graph.
TEST(OnnxExport, OtherImageSizesAndBatchesRunFromOneFile) {
  MO_SKIP_WITHOUT_ONNXRUNTIME();
  nn::MambaOut m(nn::mambaout_config("mambaout_femto"), 5);
  m.eval();
  const std::string model = tmp_path("sizes.onnx");
  export_onnx(m, model);
  for (auto [batch, res] : {std::pair<int64_t, int64_t>{1, 160}, {3, 96}, {2, 288}}) {
    SCOPED_TRACE(res);
    Tensor x = mo::test::randn({batch, 3, res, res}, 3 + res);
    const std::string in = tmp_path("sizes_x.npy"), out = tmp_path("sizes_y.npy");
    mo::test::save_npy(in, x);
    auto r = onnx_test::onnx_run(model, in, out);
    ASSERT_EQ(r.rc, 0) << r.output;
    EXPECT_LE(mo::test::rel_error(mo::test::load_npy(out), mo_logits(m, x)), 1e-4);
  }
}

// The rw variants take the other branches: no stem norm1, LN-first downsampling, LayerScale, SiLU,
// the norm_mlp head; the second one with conv_ratio = expansion_ratio, which leaves no identity channels.
TEST(OnnxExport, RwVariantMatches) {
  MO_SKIP_WITHOUT_ONNXRUNTIME();
  for (const char* arch : {"test_mambaout", "mambaout_base_wide_rw"}) {
    SCOPED_TRACE(arch);
    nn::MambaOutConfig c = nn::mambaout_config(arch);
    if (std::string(arch) == "mambaout_base_wide_rw")
      c.depths = {1, 1, 1, 1}, c.dims = {32, 64, 96, 128}, c.conv_ratio = c.expansion_ratio;
    c.num_classes = 17;
    nn::MambaOut m(c, 9);
    m.eval();
    for (auto* blk : m.stages[1]) blk->gamma->fill_(0.5);  // LayerScale away from 1e-5 so it counts
    Tensor x = mo::test::randn({2, 3, 64, 64}, 4);
    Tensor y = ort_logits(m, x, {}, arch);
    ASSERT_TRUE(y.defined());
    EXPECT_LE(mo::test::rel_error(y, mo_logits(m, x)), 1e-4);
  }
}

// Hidden widths that are not a multiple of 8 are stored padded (nn/mambaout.h, as in mambaout_base); the
// file holds the reference layout and the same logits.
TEST(OnnxExport, PaddedHiddenWidthsExportTheReferenceLayout) {
  MO_SKIP_WITHOUT_ONNXRUNTIME();
  nn::MambaOutConfig c = nn::mambaout_config("mambaout_base");
  c.depths = {1, 1, 1, 1}, c.dims = {24, 40, 56, 64}, c.num_classes = 10;  // h = 64, 106, 149, 170
  nn::MambaOut m(c, 13);
  m.eval();
  ASSERT_NE(m.stages[1][0]->stored_hidden, m.stages[1][0]->hidden) << "the case this test is for";
  Tensor x = mo::test::randn({2, 3, 64, 64}, 6);
  Tensor y = ort_logits(m, x, {}, "padded");
  ASSERT_TRUE(y.defined());
  EXPECT_LE(mo::test::rel_error(y, mo_logits(m, x)), 1e-4);
}

TEST(OnnxExport, Fp16WithinLooserBound) {
  MO_SKIP_WITHOUT_ONNXRUNTIME();
  nn::MambaOut m(nn::mambaout_config("mambaout_femto"), 7);
  m.eval();
  Tensor x = mo::test::randn({2, 3, 224, 224}, 11);
  OnnxExportOptions opt;
  opt.dtype = OnnxDType::fp16;
  Json info;
  Tensor y = ort_logits(m, x, opt, "femto16", &info);
  ASSERT_TRUE(y.defined());
  EXPECT_EQ(info.get("input")->get("type")->s, "tensor(float16)");
  const double err = mo::test::rel_error(y, mo_logits(m, x));
  std::printf("mambaout_femto 224 px fp16: max relative error %.3g\n", err);
  EXPECT_LE(err, 5e-3);  // fp16 storage and arithmetic: ~1e-3 of the logit scale
  export_onnx(m, tmp_path("femto32.onnx"));
  EXPECT_LT(slurp(tmp_path("femto16.onnx")).size() * 10, slurp(tmp_path("femto32.onnx")).size() * 6)
      << "fp16 weights take half the bytes";
}

TEST(OnnxExport, MetadataPropsReachOnnxruntime) {
  MO_SKIP_WITHOUT_ONNXRUNTIME();
  nn::MambaOutConfig c = nn::mambaout_config("test_mambaout");
  c.num_classes = 3;
  nn::MambaOut m(c, 1);
  m.eval();
  OnnxExportOptions opt;
  opt.metadata = {{"architecture", "test_mambaout"}, {"label_names", "[\"a, b\", \"c\", \"d\"]"}, {"crop_pct", "0.875"}};
  Json info;
  Tensor y = ort_logits(m, mo::test::randn({1, 3, 32, 32}, 2), opt, "meta", &info);
  ASSERT_TRUE(y.defined());
  const Json* meta = info.get("metadata");
  ASSERT_NE(meta, nullptr);
  for (const auto& [k, v] : opt.metadata) {
    ASSERT_NE(meta->get(k), nullptr) << k;
    EXPECT_EQ(meta->get(k)->s, v);
  }
  EXPECT_EQ(info.get("graph")->s, "test_mambaout");
}

// A ViT (2 blocks, every parameter random so that no term hides behind a zero), full and causal: the
// class token first or last, the causal mask in the graph (the file's logits are not the other mode's),
// fp32 within 1e-4 and fp16 within 5e-3; height and width fixed by the position embedding.
TEST(OnnxExport, VitFullAndCausalMatchMoLogits) {
  MO_SKIP_WITHOUT_ONNXRUNTIME();
  const Tensor x = mo::test::randn({2, 3, 32, 32}, 5);
  for (bool causal : {false, true}) {
    SCOPED_TRACE(causal ? "causal" : "full");
    nn::VitConfig c = nn::vit_config("vit_tiny_patch4_32");
    c.depth = 2, c.num_classes = 10, c.causal = causal;
    nn::VisionTransformer m(c, 3, false);
    uint64_t seed = 100;
    for (auto& [n, p] : m.named_parameters()) m.set_parameter(n, mo::test::randn(p.shape(), seed++, DType::f32, 0.2));
    c.causal = !causal;
    nn::VisionTransformer flipped(c, 0, false);
    for (auto& [n, p] : m.named_parameters()) flipped.set_parameter(n, p);
    m.eval(), flipped.eval();
    const Tensor ref = mo_logits(m, x);
    Json info;
    Tensor y = ort_logits(m, x, {}, causal ? "vit_causal" : "vit_full", &info);
    ASSERT_TRUE(y.defined());
    const double err = mo::test::rel_error(y, ref);
    std::printf("vit %s fp32: max relative error %.3g\n", causal ? "causal" : "full", err);
    EXPECT_LE(err, 1e-4);
    EXPECT_GT(mo::test::rel_error(y, mo_logits(flipped, x)), 1e-3) << "the other attention mode gives these logits";
    const Json* shape = info.get("input")->get("shape");
    ASSERT_EQ(shape->array.size(), 4u);
    EXPECT_EQ(shape->array[0].s, "batch");
    EXPECT_EQ(shape->array[2].i, 32);
    EXPECT_EQ(shape->array[3].i, 32);
    EXPECT_EQ(info.get("graph")->s, "vit_tiny_patch4_32");
    const Json* checked = info.get("checked");  // onnx.checker's full check, where onnx is installed
    ASSERT_NE(checked, nullptr);
    if (checked->kind != Json::Kind::boolean) EXPECT_EQ(checked->get("ir_version")->i, kOnnxIrVersion);
    OnnxExportOptions fp16;
    fp16.dtype = OnnxDType::fp16;
    Tensor y16 = ort_logits(m, x, fp16, causal ? "vit_causal16" : "vit_full16");
    ASSERT_TRUE(y16.defined());
    EXPECT_LE(mo::test::rel_error(y16, ref), 5e-3);
  }
}

TEST(OnnxExport, Errors) {
  EXPECT_NE(mo::test::error_of([] { parse_onnx_dtype("bf8"); }).find("'bf8' is not one of fp32, fp16"),
            std::string::npos);
  nn::MambaOut m(nn::mambaout_config("test_mambaout"), 1);
  const std::string bad = tmp_path("no_such_dir/x.onnx");
  EXPECT_NE(mo::test::error_of([&] { export_onnx(m, bad); }).find("cannot write '" + bad + "': folder '"),
            std::string::npos);
  EXPECT_NE(mo::test::error_of([&] { export_onnx(m, tmp_path("")); }).find("it is a directory"), std::string::npos);
  // a weight float16 cannot hold is refused, not written as inf
  m.head->fc2->bias->fill_(1e5);
  OnnxExportOptions fp16;
  fp16.dtype = OnnxDType::fp16;
  EXPECT_NE(mo::test::error_of([&] { onnx_model_bytes(m, fp16); })
                .find("onnx export: head.fc2.bias holds 100000 at element 0, beyond float16's range"),
            std::string::npos);
  EXPECT_FALSE(onnx_model_bytes(m).empty());  // fp32 holds it
}
