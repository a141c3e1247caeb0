// test_io_model.cpp: checkpoints between our MambaOut (nn/mambaout.h) and the PyTorch reference
// (tests/reference/mambaout_ref.py, driven by scripts/io/torch_io.py through MO_PYTHON):
//  - PyTorch saves its weights (official or timm names, flat or wrapped) -> load_into_model -> our logits
//    equal PyTorch's (fp32, <= 1e-5 relative);
//  - we export (.pth official, .safetensors timm) -> torch loads with load_state_dict(strict=True) ->
//    PyTorch's logits equal ours;
//  - the real mambaout_femto layout matches the reference key for key;
//  - a model that stores its hidden widths padded (all of these small ones) reads and writes the
//    reference layout bit for bit;
//  - a model of the wrong size, missing and unexpected keys: clear errors naming keys and shapes.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <map>

#include "autograd/graph.h"
#include "nn/io/checkpoint_io.h"
#include "nn/mambaout.h"
#include "tests/nn/io/io_test_util.h"
#include "tests/test_util.h"

using namespace mo;
using namespace mo::nn::io;
using mo::io_test::torch_io;
using mo::test::error_of;

namespace {

const char* kSmallArgs = "--depths 1,1,2,1 --dims 16,32,48,64 --classes 10 --batch 2 --res 64";

nn::MambaOutConfig small_cfg(std::vector<int64_t> depths = {1, 1, 2, 1}, std::vector<int64_t> dims = {16, 32, 48, 64}) {
  nn::MambaOutConfig c = nn::mambaout_config("mambaout_femto");
  c.name = "io_test_small";
  c.depths = std::move(depths);
  c.dims = std::move(dims);
  c.num_classes = 10;
  return c;
}

std::vector<float> logits_of(const nn::MambaOut& m, const std::vector<float>& input, int64_t batch, int64_t res) {
  NoGradGuard g;
  Tensor x = Tensor::from_vector(input, {batch, 3, res, res});
  return m.forward(x).to_vector<float>();
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST(IoModel, TorchWeightsGiveTorchLogits) {
  io_test::TempDir dir("model_in");
  for (const char* variant : {"official", "timm"}) {
    SCOPED_TRACE(variant);
    const bool timm = std::string(variant) == "timm";
    const std::string w = dir / (std::string(variant) + ".pth");
    auto r = torch_io(std::string("ref-save ") + kSmallArgs + " --seed 3 --names " + variant + (timm ? " --wrap" : "") +
                      " --out " + w + " --input " + (dir / "x.bin") + " --logits " + (dir / "y.bin"));
    ASSERT_EQ(r.rc, 0) << r.output;
    nn::MambaOut model(small_cfg(), /*init_seed=*/99);
    model.eval();
    LoadReport rep = load_into_model(model, w);
    EXPECT_EQ(rep.loaded, model.named_parameters().size());
    EXPECT_EQ(rep.file_naming, timm ? Naming::timm : Naming::official);
    EXPECT_TRUE(rep.missing.empty() && rep.unexpected.empty()) << rep.summary();
    const auto x = io_test::read_f32(dir / "x.bin");
    const auto want = io_test::read_f32(dir / "y.bin");
    const auto got = logits_of(model, x, 2, 64);
    ASSERT_EQ(got.size(), want.size());
    const double d = io_test::max_rel_diff(got, want);
    std::printf("torch -> %s file -> mo: max relative logit difference %.3g\n", variant, d);
    EXPECT_LE(d, 1e-5);
    // The same weights through safetensors load identically.
    write_checkpoint(read_checkpoint(w), dir / "w.safetensors");
    nn::MambaOut again(small_cfg(), 7);
    again.eval();
    load_into_model(again, dir / "w.safetensors");
    EXPECT_EQ(logits_of(again, x, 2, 64), got);
  }
}

TEST(IoModel, ExportedWeightsLoadStrictInTorch) {
  io_test::TempDir dir("model_out");
  nn::MambaOut model(small_cfg(), 123);
  model.eval();
  int k = 0;
  for (auto& [name, p] : model.named_parameters())  // make every LayerNorm non-trivial
    if (contains(name, "norm.")) {
      std::vector<float> v(p.numel());
      for (auto& e : v) e = (contains(name, "weight") ? 1.0f : 0.0f) + 0.2f * std::sin(0.7f * static_cast<float>(k++));
      p.copy_(Tensor::from_vector(v, p.shape()));
    }
  std::vector<float> x(2 * 3 * 64 * 64);
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.013f * static_cast<float>(i)) * 1.5f;
  io_test::write_f32(dir / "x.bin", x);
  const auto ours = logits_of(model, x, 2, 64);
  save_model(model, dir / "ours.pth", Naming::official);
  save_model(model, dir / "ours_timm.safetensors", Naming::timm);
  for (const auto& [file, names] : {std::pair{"ours.pth", "official"}, std::pair{"ours_timm.safetensors", "timm"}}) {
    SCOPED_TRACE(file);
    auto r = torch_io(std::string("ref-logits ") + kSmallArgs + " --names " + names + " --weights " + (dir / file) +
                      " --input " + (dir / "x.bin") + " --logits " + (dir / "y.bin"));
    ASSERT_EQ(r.rc, 0) << r.output;
    const auto theirs = io_test::read_f32(dir / "y.bin");
    ASSERT_EQ(theirs.size(), ours.size());
    const double d = io_test::max_rel_diff(theirs, ours);
    std::printf("mo -> %s -> torch: max relative logit difference %.3g\n", file, d);
    EXPECT_LE(d, 1e-5);
  }
}

TEST(IoModel, FemtoLayoutMatchesTheReference) {
  io_test::TempDir dir("femto");
  const std::string w = dir / "femto.pth";
  auto r = torch_io("ref-save --depths 3,3,9,3 --dims 48,96,192,288 --classes 1000 --batch 1 --res 32 --seed 5 --out " +
                    w + " --input " + (dir / "x.bin") + " --logits " + (dir / "y.bin"));
  ASSERT_EQ(r.rc, 0) << r.output;
  nn::MambaOut model(nn::mambaout_config("mambaout_femto"), 1);
  model.eval();
  LoadReport rep = load_into_model(model, w);  // strict: every key and shape must match
  EXPECT_EQ(rep.loaded, 172u);
  // load_state_dict_file gives the file's order, which is the model's (official registration) order.
  NamedTensors file = load_state_dict_file(w);
  auto params = model.named_parameters();
  ASSERT_EQ(file.size(), params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_EQ(file[i].first, params[i].first);
    EXPECT_EQ(file[i].second.to_vector<float>(), params[i].second.to_vector<float>()) << params[i].first;
  }
  EXPECT_LE(io_test::max_rel_diff(logits_of(model, io_test::read_f32(dir / "x.bin"), 1, 32),
                                  io_test::read_f32(dir / "y.bin")),
            1e-5);
}

TEST(IoModel, MismatchedModelsAreClearErrors) {
  io_test::TempDir dir("mismatch");
  const std::string w = dir / "small.pth";
  auto r = torch_io(std::string("ref-save ") + kSmallArgs + " --out " + w + " --input " + (dir / "x.bin") +
                    " --logits " + (dir / "y.bin"));
  ASSERT_EQ(r.rc, 0) << r.output;
  // Wrong size: the key and both shapes are named, and nothing is half-loaded.
  nn::MambaOut wide(small_cfg({1, 1, 2, 1}, {16, 32, 48, 80}), 1);
  const auto before = wide.parameter("stages.0.0.fc1.weight").to_vector<float>();
  std::string e = error_of([&] { load_into_model(wide, w); });
  EXPECT_TRUE(contains(e, "'downsample_layers.3.conv.weight' has shape [64, 48, 3, 3] in the file but the model "
                          "expects [80, 48, 3, 3]")) << e;
  EXPECT_TRUE(contains(e, "small.pth")) << e;
  EXPECT_EQ(wide.parameter("stages.0.0.fc1.weight").to_vector<float>(), before);
  // The same through timm names: the file's own key is shown too.
  write_checkpoint(rename_state_dict(read_checkpoint(w), Naming::timm), dir / "small_timm.safetensors");
  e = error_of([&] { load_into_model(wide, dir / "small_timm.safetensors"); });
  EXPECT_TRUE(contains(e, "(file key 'stages.3.downsample.conv.weight')")) << e;
  // Missing keys (the model is deeper than the file).
  nn::MambaOut deeper(small_cfg({1, 1, 3, 1}), 1);
  e = error_of([&] { load_into_model(deeper, w); });
  EXPECT_TRUE(contains(e, "8 missing key(s)")) << e;
  EXPECT_TRUE(contains(e, "stages.2.2.norm.weight")) << e;
  // Unexpected keys (the file is deeper than the model): an error when strict, a report otherwise.
  nn::MambaOut shallower(small_cfg({1, 1, 1, 1}), 1);
  e = error_of([&] { load_into_model(shallower, w); });
  EXPECT_TRUE(contains(e, "8 unexpected key(s)")) << e;
  EXPECT_TRUE(contains(e, "stages.2.1.fc1.weight")) << e;
  LoadReport rep = load_into_model(shallower, w, LoadOptions{.strict = false});
  EXPECT_EQ(rep.unexpected.size(), 8u);
  EXPECT_TRUE(rep.missing.empty());
  EXPECT_EQ(rep.loaded, shallower.named_parameters().size());
  EXPECT_TRUE(contains(rep.summary(), "8 unexpected")) << rep.summary();
  // Something that is not a weight file at all.
  e = error_of([&] { load_into_model(shallower, dir / "x.bin"); });
  EXPECT_TRUE(contains(e, "x.bin")) << e;
}

TEST(IoModel, AnotherClassCountKeepsTheModelsClassifier) {
  // Fine-tuning: weights for 10 classes into a 4-class model. Only the classifier (head.fc2) may differ;
  // it keeps the model's initialisation, everything else comes from the file.
  io_test::TempDir dir("finetune");
  nn::MambaOut src(small_cfg(), 3);
  const std::string w = dir / "src.safetensors";
  save_model(src, w, Naming::timm);
  nn::MambaOutConfig cfg = small_cfg();
  cfg.num_classes = 4;
  nn::MambaOut dst(cfg, 5);
  const std::vector<std::string> names = dst.classifier_parameter_names();
  ASSERT_EQ(names, (std::vector<std::string>{"head.fc2.weight", "head.fc2.bias"}));
  const auto w_before = dst.parameter("head.fc2.weight").to_vector<float>();
  const auto b_before = dst.parameter("head.fc2.bias").to_vector<float>();
  // Without the option the classifier is a shape error like any other.
  std::string e = error_of([&] { load_into_model(dst, w); });
  EXPECT_TRUE(contains(e, "'head.fc2.weight' (file key 'head.fc.weight') has shape [10, 256]")) << e;
  // A body parameter of another shape is still an error with the option.
  nn::MambaOut wide(small_cfg({1, 1, 2, 1}, {16, 32, 48, 80}), 1);
  e = error_of([&] { load_into_model(wide, w, LoadOptions{.keep_if_shape_differs = names}); });
  EXPECT_TRUE(contains(e, "downsample_layers.3.conv.weight")) << e;

  LoadReport rep = load_into_model(dst, w, LoadOptions{.keep_if_shape_differs = names});
  EXPECT_EQ(rep.kept.size(), 2u);
  EXPECT_TRUE(rep.missing.empty());
  EXPECT_EQ(rep.loaded, dst.named_parameters().size() - 2);
  EXPECT_TRUE(contains(rep.summary(), "head.fc2.weight (file [10, 256], model [4, 256])")) << rep.summary();
  for (const auto& [n, t] : dst.named_parameters()) {
    if (n == "head.fc2.weight") EXPECT_EQ(t.to_vector<float>(), w_before);
    else if (n == "head.fc2.bias") EXPECT_EQ(t.to_vector<float>(), b_before);
    else EXPECT_EQ(t.to_vector<float>(), src.parameter(n).to_vector<float>()) << n;
  }
}

TEST(IoModel, RwVariantExportsTimmNames) {
  // timm's test_mambaout (rw layout: no stem norm1, LN-first downsample, LayerScale, norm_mlp head):
  // exported with timm names, the keys are timm's (mambaout.md §2.2) and load back into the model.
  io_test::TempDir dir("rw");
  nn::MambaOut model(nn::mambaout_config("test_mambaout"), 4);
  RawStateDict sd = state_dict_of(model, Naming::timm);
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const auto& [n, t] : sd.tensors) shapes[n] = t.shape;
  EXPECT_EQ(shapes.count("stem.norm1.weight"), 0u);
  EXPECT_EQ(shapes["stem.conv1.weight"], (std::vector<int64_t>{8, 3, 3, 3}));
  EXPECT_EQ(shapes["stages.0.blocks.0.ls.gamma"], (std::vector<int64_t>{16}));
  EXPECT_EQ(shapes["stages.1.downsample.norm.weight"], (std::vector<int64_t>{16}));  // LN(C_in) before the conv
  EXPECT_EQ(shapes["stages.1.downsample.conv.weight"], (std::vector<int64_t>{32, 16, 3, 3}));
  EXPECT_EQ(shapes["head.norm.weight"], (std::vector<int64_t>{64}));
  EXPECT_EQ(shapes["head.pre_logits.fc.weight"], (std::vector<int64_t>{256, 64}));
  EXPECT_EQ(shapes["head.fc.weight"], (std::vector<int64_t>{1000, 256}));
  EXPECT_EQ(shapes.count("head.pre_logits.norm.weight"), 0u);
  EXPECT_EQ(sd.tensors.size(), model.named_parameters().size());
  int64_t total = 0;
  for (const auto& [n, t] : sd.tensors) total += t.numel();
  EXPECT_EQ(total, 447560);  // mambaout.md §1.1
  write_checkpoint(sd, dir / "rw.safetensors");
  nn::MambaOut again(nn::mambaout_config("test_mambaout"), 5);
  LoadReport rep = load_into_model(again, dir / "rw.safetensors");
  EXPECT_EQ(rep.file_naming, Naming::timm);
  for (const auto& [n, p] : model.named_parameters())
    EXPECT_EQ(p.to_vector<float>(), again.parameter(n).to_vector<float>()) << n;
}

TEST(IoModel, PaddedModelRoundTripsFilesBitExact) {
  // The small model's hidden widths (42, 85, 128, 170) are stored padded to multiples of 8 (mambaout.h);
  // files keep the reference layout: torch's weights go in and come out with the same bits, in both
  // namings and both formats, and save -> load -> save (converting the naming both ways) repeats the bytes.
  io_test::TempDir dir("padded");
  nn::MambaOut model(small_cfg(), 1);
  ASSERT_EQ(model.stages[0][0]->hidden, 42);
  ASSERT_EQ(model.stages[0][0]->stored_hidden, 48);
  ASSERT_EQ(model.parameter("stages.0.0.fc1.weight").shape(), (Shape{96, 16}));
  for (const char* names : {"official", "timm"}) {
    auto r = torch_io(std::string("ref-save ") + kSmallArgs + " --seed 4 --names " + names + " --out " +
                      (dir / (std::string("torch_") + names + ".pth")) + " --input " + (dir / "x.bin") + " --logits " +
                      (dir / "y.bin"));
    ASSERT_EQ(r.rc, 0) << r.output;
  }
  load_into_model(model, dir / "torch_timm.pth");
  save_model(model, dir / "official.pth", Naming::official);
  save_model(model, dir / "timm.pth", Naming::timm);
  save_model(model, dir / "timm.safetensors", Naming::timm);
  auto r = torch_io("compare --same-order " + (dir / "torch_official.pth") + " " + (dir / "official.pth") + " " +
                    (dir / "torch_timm.pth") + " " + (dir / "timm.pth") + " " + (dir / "torch_timm.pth") + " " +
                    (dir / "timm.safetensors"));
  EXPECT_EQ(r.rc, 0) << r.output;
  // timm safetensors -> (a fresh padded model) -> official .pth: the same bytes as official.pth, and back.
  nn::MambaOut a(small_cfg(), 2), b(small_cfg(), 3);
  load_into_model(a, dir / "timm.safetensors");
  save_model(a, dir / "again_official.pth", Naming::official);
  EXPECT_EQ(read_file(dir / "again_official.pth"), read_file(dir / "official.pth"));
  load_into_model(b, dir / "again_official.pth");
  save_model(b, dir / "again_timm.safetensors", Naming::timm);
  EXPECT_EQ(read_file(dir / "again_timm.safetensors"), read_file(dir / "timm.safetensors"));
  save_model(b, dir / "again_timm.pth", Naming::timm);
  EXPECT_EQ(read_file(dir / "again_timm.pth"), read_file(dir / "timm.pth"));
  // and the padded parameters loaded equal, pads included (zero)
  for (const auto& [n, p] : model.named_parameters())
    EXPECT_EQ(p.to_vector<float>(), b.parameter(n).to_vector<float>()) << n;
  const auto x = io_test::read_f32(dir / "x.bin");
  EXPECT_LE(io_test::max_rel_diff(logits_of(b, x, 2, 64), io_test::read_f32(dir / "y.bin")), 1e-5);
}
