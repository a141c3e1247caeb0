// test_export_tools.cpp: mo_convert's exports through the real programs, from a checkpoint mo_train wrote
// (test_mambaout, 3 named classes, 32 px, crop_pct 0.875, bilinear):
//  - .onnx (fp32 and fp16) runs in onnxruntime and gives the checkpoint's logits; its metadata_props say
//    the architecture, classes and eval settings;
//  - .safetensors / .pth / .mo outputs carry the same facts ("format": "pt" in safetensors; torch.load
//    still reads the .pth), and mo_predict says it took its settings from the file;
//  - --hf-dir writes timm names and timm's config.json (checked against timm's documented structure);
//    reading the folder back gives the same weights and settings, and mo_predict/mo_validate accept it;
//  - --arch for files that do not say their architecture; bad options and inputs are named.
#include <algorithm>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <tuple>

#include "autograd/graph.h"
#include "nn/io/checkpoint_io.h"
#include "nn/io/json_lite.h"
#include "nn/mambaout.h"
#include "tests/nn/io/onnx_test_util.h"
#include "tests/test_util.h"
#include "tests/engine/train_test_util.h"
#include "tools/common/inference.h"
#include "tools/engine/model_info.h"
#include "tools/engine/weights.h"

using namespace mo;
using namespace mo::tools::testing;
using nn::io::Json;

namespace {

const std::string kBin = std::string(MO_BINARY_DIR) + "/tools/";
const auto sh = mo::test::run_command;

std::string tmp(const std::string& name) { return mo::test::tmp_path(name); }

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

std::string meta(const nn::io::RawStateDict& sd, const std::string& key) {
  for (const auto& [k, v] : sd.metadata)
    if (k == key) return v;
  return "<absent>";
}

// A checkpoint written by mo_train (one step), with class names and non-default eval settings.
const std::string& checkpoint() {
  static const std::string path = [] {
    const std::string root = make_image_folder("export_tools_data", 3, 2, 1);
    const std::string out = tmp("export_tools_run"), recipe = tmp("export_tools.yaml");
    std::ofstream(recipe) << "model: {name: test_mambaout, num_classes: 3}\n"
                          << "data: {root: " << root << ", img_size: 32, workers: 1, crop_pct: 0.875, "
                          << "interpolation: bilinear}\n"
                          << "sched: {epochs: 1, warmup_epochs: 0, cooldown_epochs: 0}\n"
                          << "train: {batch_size: 2, global_batch: 2, device: cpu, precision: fp32, eval_every: 0,\n"
                          << "        output: " << out << ", max_steps: 1}\n"
                          << "ckpt: {every_steps: 1, keep_last: 1}\n"
                          << "log: {progress: lines, tensorboard: false}\n";
    auto r = sh(kBin + "mo_train " + recipe);
    EXPECT_EQ(r.rc, 0) << r.output;
    return out + "/checkpoints/ckpt-e0000-s00000001.mo";
  }();
  return path;
}

void expect_settings(const nn::io::RawStateDict& sd, const std::string& what) {
  SCOPED_TRACE(what);
  EXPECT_EQ(meta(sd, "arch"), "test_mambaout");
  EXPECT_EQ(meta(sd, "num_classes"), "3");
  EXPECT_EQ(meta(sd, "label_names"), "[\"class_0\", \"class_1\", \"class_2\"]");
  EXPECT_EQ(meta(sd, "img_size"), "32");
  EXPECT_EQ(meta(sd, "crop_pct"), "0.875");
  EXPECT_EQ(meta(sd, "interpolation"), "bilinear");
  EXPECT_EQ(meta(sd, "mean"), "0.485,0.456,0.406");
  EXPECT_EQ(meta(sd, "std"), "0.229,0.224,0.225");
}

// The checkpoint's logits on x (B, 3, 32, 32).
Tensor mo_logits(const std::string& weights, const Tensor& x) {
  tools::LoadedModel m = tools::load_model_for_eval(weights, "", Device::cpu(), DType::f32);
  NoGradGuard g;
  return dynamic_cast<const nn::MambaOut&>(*m.model).forward(x);
}

}  // namespace

TEST(ExportTools, OnnxFromACheckpointGivesItsLogits) {
  MO_SKIP_WITHOUT_ONNXRUNTIME();
  const Tensor x = mo::test::randn({2, 3, 32, 32}, 5);
  const std::string in = tmp("export_x.npy"), out = tmp("export_y.npy"), info = tmp("export_info.json");
  mo::test::save_npy(in, x);
  const Tensor ref = mo_logits(checkpoint(), x);
  for (auto [dtype, tol] : {std::pair<std::string, double>{"fp32", 1e-4}, {"fp16", 5e-3}}) {
    SCOPED_TRACE(dtype);
    const std::string onnx = tmp("export_" + dtype + ".onnx");
    auto c = sh(kBin + "mo_convert " + checkpoint() + " " + onnx + " --onnx-dtype " + dtype);
    ASSERT_EQ(c.rc, 0) << c.output;
    EXPECT_NE(c.output.find("onnx opset 17, " + dtype), std::string::npos) << c.output;
    auto r = onnx_test::onnx_run(onnx, in, out, info);
    ASSERT_EQ(r.rc, 0) << r.output;
    EXPECT_LE(mo::test::rel_error(mo::test::load_npy(out), ref), tol);
    Json j = nn::io::parse_json(slurp(info), info);
    const Json* md = j.get("metadata");
    ASSERT_NE(md, nullptr);
    EXPECT_EQ(md->get("arch")->s, "test_mambaout");
    EXPECT_EQ(md->get("num_classes")->s, "3");
    EXPECT_EQ(md->get("label_names")->s, "[\"class_0\", \"class_1\", \"class_2\"]");
    EXPECT_EQ(md->get("img_size")->s, "32");
    EXPECT_EQ(md->get("crop_pct")->s, "0.875");
    EXPECT_EQ(md->get("interpolation")->s, "bilinear");
    EXPECT_EQ(md->get("mean")->s, "0.485,0.456,0.406");
    EXPECT_EQ(md->get("std")->s, "0.229,0.224,0.225");
    ASSERT_NE(md->get("input"), nullptr);
  }
}

TEST(ExportTools, EveryWrittenFileDescribesItself) {
  tools::register_mo_format();
  const std::string st = tmp("export_w.safetensors"), mo2 = tmp("export_w.mo"), st2 = tmp("export_w2.safetensors");
  ASSERT_EQ(sh(kBin + "mo_convert " + checkpoint() + " " + st).rc, 0);
  nn::io::RawStateDict sd = nn::io::read_checkpoint(st);
  expect_settings(sd, st);
  EXPECT_EQ(meta(sd, "format"), "pt");
  // .safetensors -> .mo -> .safetensors keeps every fact
  ASSERT_EQ(sh(kBin + "mo_convert " + st + " " + mo2).rc, 0);
  expect_settings(nn::io::read_checkpoint(mo2), mo2);
  ASSERT_EQ(sh(kBin + "mo_convert " + mo2 + " " + st2).rc, 0);
  expect_settings(nn::io::read_checkpoint(st2), st2);
  // .pth: the facts in a record torch.load does not read; torch still loads the tensors (weights_only)
  const std::string pth = tmp("export_w.pth");
  ASSERT_EQ(sh(kBin + "mo_convert " + st + " " + pth).rc, 0);
  expect_settings(nn::io::read_checkpoint(pth), pth);
  if (mo::test::python_has_torch()) {
    auto t = sh(std::string(MO_PYTHON) + " -c \"import torch; sd = torch.load('" + pth +
                "', weights_only=True); assert 'head.fc2.weight' in sd and len(sd) == 78, sorted(sd)[:3]\"");
    EXPECT_EQ(t.rc, 0) << t.output;
  }
  // the programs use what the file carries and say so
  const std::string img = tmp("export_tools_data") + "/val/class_0/0.jpg";
  auto p = sh(kBin + "mo_predict --weights " + st + " --device cpu " + img);
  ASSERT_EQ(p.rc, 0) << p.output;
  EXPECT_NE(p.output.find("32 px (file metadata), crop_pct 0.875 (file metadata), bilinear (file metadata)"),
            std::string::npos) << p.output;
  EXPECT_NE(p.output.find("class_"), std::string::npos) << "the class names come from the file:\n" << p.output;
  auto p2 = sh(kBin + "mo_predict --weights " + mo2 + " --device cpu --img-size 48 " + img);
  ASSERT_EQ(p2.rc, 0) << p2.output;
  EXPECT_NE(p2.output.find("48 px (option), crop_pct 0.875 (checkpoint)"), std::string::npos) << p2.output;
  // the same top-5 from the .mo and its safetensors copy
  auto strip = [](const std::string& s) { return s.substr(s.find(tmp("export_tools_data"))); };
  EXPECT_EQ(strip(p.output), strip(sh(kBin + "mo_predict --weights " + checkpoint() + " --device cpu " + img).output));
  // another mean/std in the file is applied (and named); where it cannot be, the program says so
  nn::io::RawStateDict other = sd;
  tools::set_metadata(other.metadata, "mean", "0.5,0.5,0.5");
  tools::set_metadata(other.metadata, "std", "0.25,0.25,0.25");
  const std::string st3 = tmp("export_mean.safetensors");
  nn::io::write_checkpoint(other, st3);
  auto p3 = sh(kBin + "mo_predict --weights " + st3 + " --device cpu " + img);
  ASSERT_EQ(p3.rc, 0) << p3.output;
  EXPECT_NE(p3.output.find("mean/std 0.5,0.5,0.5/0.25,0.25,0.25 (file metadata)"), std::string::npos) << p3.output;
  EXPECT_NE(strip(p3.output), strip(p.output)) << "the file's mean/std changed nothing";
  auto v3 = sh(kBin + "mo_validate " + st3 + " --data " + tmp("export_tools_data") + " --workers 1 --device cpu");
  EXPECT_EQ(v3.rc, 1);
  EXPECT_NE(v3.output.find("mo_validate's loader normalises with ImageNet's only"), std::string::npos) << v3.output;
  auto c3 = sh(kBin + "mo_convert " + st3 + " " + tmp("export_mean.mo"));
  EXPECT_EQ(c3.rc, 1);
  EXPECT_NE(c3.output.find("mo checkpoints normalise with ImageNet's mean/std"), std::string::npos) << c3.output;
}

TEST(ExportTools, HuggingFaceFolderRoundTrip) {
  tools::register_mo_format();
  const std::string dir = tmp("export_hf"), back = tmp("export_hf_back.mo");
  std::filesystem::remove_all(dir);
  auto c = sh(kBin + "mo_convert " + checkpoint() + " --hf-dir " + dir);
  ASSERT_EQ(c.rc, 0) << c.output;
  // config.json in timm's pretrained_cfg form (timm/models/_hub.py save_config_for_hf / _parse_model_cfg)
  const std::string cfg_path = dir + "/config.json";
  Json cfg = nn::io::parse_json(slurp(cfg_path), cfg_path);
  EXPECT_EQ(cfg.get("architecture")->s, "test_mambaout");
  EXPECT_EQ(cfg.get("num_classes")->i, 3);
  ASSERT_NE(cfg.get("label_names"), nullptr);
  ASSERT_EQ(cfg.get("label_names")->array.size(), 3u);
  EXPECT_EQ(cfg.get("label_names")->array[2].s, "class_2");
  const Json* pc = cfg.get("pretrained_cfg");
  ASSERT_NE(pc, nullptr);
  ASSERT_EQ(pc->kind, Json::Kind::object);
  const Json* is = pc->get("input_size");
  ASSERT_EQ(is->array.size(), 3u);
  EXPECT_EQ(is->array[0].i, 3);
  EXPECT_EQ(is->array[1].i, 32);
  EXPECT_EQ(is->array[2].i, 32);
  EXPECT_DOUBLE_EQ(pc->get("crop_pct")->d, 0.875);
  EXPECT_EQ(pc->get("interpolation")->s, "bilinear");
  EXPECT_DOUBLE_EQ(pc->get("mean")->array[1].d, 0.456);
  EXPECT_DOUBLE_EQ(pc->get("std")->array[2].d, 0.225);
  EXPECT_EQ(pc->get("num_classes")->i, 3);
  EXPECT_EQ(pc->get("classifier")->s, "head.fc");
  // timm names in model.safetensors, with the metadata and "format": "pt"
  nn::io::RawStateDict hf = nn::io::read_checkpoint(dir + "/model.safetensors");
  EXPECT_NE(hf.find("stem.conv1.weight"), nullptr);
  EXPECT_NE(hf.find("head.fc.weight"), nullptr);
  EXPECT_EQ(meta(hf, "format"), "pt");
  // back from the folder: the same tensors, bit for bit, and the same settings
  c = sh(kBin + "mo_convert " + dir + " " + back);
  ASSERT_EQ(c.rc, 0) << c.output;
  nn::io::RawStateDict a = nn::io::read_checkpoint(checkpoint()), b = nn::io::read_checkpoint(back);
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    EXPECT_EQ(a.tensors[i].first, b.tensors[i].first);
    EXPECT_EQ(a.tensors[i].second.shape, b.tensors[i].second.shape);
    const auto ba = a.tensors[i].second.bytes(), bb = b.tensors[i].second.bytes();
    EXPECT_TRUE(std::equal(ba.begin(), ba.end(), bb.begin(), bb.end())) << a.tensors[i].first;
  }
  expect_settings(b, back);
  expect_settings(tools::read_hf_dir(dir), dir);
  // the programs read the folder as weights
  const std::string img = tmp("export_tools_data") + "/val/class_1/0.jpg";
  auto p = sh(kBin + "mo_predict --weights " + dir + " --device cpu " + img);
  ASSERT_EQ(p.rc, 0) << p.output;
  EXPECT_NE(p.output.find("32 px (file metadata)"), std::string::npos) << p.output;
  auto v = sh(kBin + "mo_validate " + dir + " --data " + tmp("export_tools_data") + " --workers 1 --device cpu");
  ASSERT_EQ(v.rc, 0) << v.output;
  EXPECT_NE(v.output.find("crop_pct 0.875 (file metadata)"), std::string::npos) << v.output;
  // one set of weights: no EMA to take
  auto e = sh(kBin + "mo_predict --weights " + dir + " --use-ema --device cpu " + img);
  EXPECT_EQ(e.rc, 1) << e.output;
  EXPECT_NE(e.output.find("'" + dir + "' is a folder of one model.safetensors, which holds one set of weights"),
            std::string::npos) << e.output;
}

TEST(ExportTools, ArchForFilesThatDoNotSay) {
  // weights written by other code have tensors only (nn/io's writers, without the tools' metadata)
  const std::string bare = tmp("export_bare.safetensors");
  nn::MambaOutConfig mc = nn::mambaout_config("test_mambaout");
  mc.num_classes = 4;
  nn::MambaOut model(mc, 3);
  nn::io::save_model(model, bare);
  auto r = sh(kBin + "mo_convert " + bare + " " + tmp("export_bare.onnx"));
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.output.find("does not say which model it holds: name it with --arch"), std::string::npos) << r.output;
  r = sh(kBin + "mo_convert " + bare + " --hf-dir " + tmp("export_bare_hf"));
  EXPECT_NE(r.output.find("name it with --arch"), std::string::npos) << r.output;
  r = sh(kBin + "mo_convert " + bare + " --hf-dir " + tmp("export_bare_hf") + " --arch test_mambaout --img-size 64");
  ASSERT_EQ(r.rc, 0) << r.output;
  tools::ModelInfo info = tools::parse_hf_config(slurp(tmp("export_bare_hf/config.json")), "config.json");
  EXPECT_EQ(info.arch, "test_mambaout");
  EXPECT_EQ(info.num_classes, 4);
  EXPECT_EQ(info.img_size, 64);
  EXPECT_TRUE(info.class_names.empty());
  // .safetensors and .pth inputs export to ONNX like .mo ones
  if (onnx_test::have_onnxruntime()) {
    const std::string pth = tmp("export_bare.pth"), in = tmp("export_bare_x.npy"), out = tmp("export_bare_y.npy");
    nn::io::save_model(model, pth);
    const Tensor x = mo::test::randn({3, 3, 48, 48}, 8);
    mo::test::save_npy(in, x);
    model.eval();
    NoGradGuard g;
    const Tensor ref = model.forward(x);
    for (const std::string& w : {bare, pth}) {
      SCOPED_TRACE(w);
      r = sh(kBin + "mo_convert " + w + " " + tmp("export_bare.onnx") + " --arch test_mambaout");
      ASSERT_EQ(r.rc, 0) << r.output;
      auto o = onnx_test::onnx_run(tmp("export_bare.onnx"), in, out);
      ASSERT_EQ(o.rc, 0) << o.output;
      EXPECT_LE(mo::test::rel_error(mo::test::load_npy(out), ref), 1e-4);
    }
  }
  r = sh(kBin + "mo_convert " + bare + " x.onnx --arch mambaout_nope");
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.output.find("unknown model 'mambaout_nope'"), std::string::npos) << r.output;
}

// A safetensors header of 128 + 256 k bytes starts with byte 0x80, the first byte of a legacy pickle:
// the programs still read it as safetensors.
TEST(ExportTools, SafetensorsStartingLikeAPickle) {
  tools::register_mo_format();
  nn::io::RawStateDict sd = nn::io::read_checkpoint(checkpoint());
  const std::string path = tmp("export_0x80.safetensors");
  for (int pad = 0; pad < 512; ++pad) {
    sd.metadata = {{"arch", "test_mambaout"}, {"pad", std::string(static_cast<size_t>(pad), 'x')}};
    nn::io::write_checkpoint(sd, path);
    if (static_cast<uint8_t>(slurp(path)[0]) == 0x80) break;
  }
  ASSERT_EQ(static_cast<uint8_t>(slurp(path)[0]), 0x80);
  auto r = sh(kBin + "mo_convert " + path + " --info");
  ASSERT_EQ(r.rc, 0) << r.output;
  EXPECT_NE(r.output.find(path + ": safetensors, 78 tensors"), std::string::npos) << r.output;
}

TEST(ExportTools, BadOptionsAndFoldersAreNamed) {
  const std::string c = kBin + "mo_convert " + checkpoint() + " ";
  auto r = sh(c + tmp("x.onnx") + " --onnx-dtype bf8");  // a usage mistake, found by the option's check
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.output.find("mo_convert: error: --onnx-dtype: expected fp32 or fp16, got 'bf8'"), std::string::npos)
      << r.output;
  r = sh(c + tmp("x.safetensors") + " --onnx-dtype fp16");
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.output.find("--onnx-dtype applies to .onnx outputs only"), std::string::npos) << r.output;
  r = sh(c + tmp("x.onnx") + " --img-size 12x");
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.output.find("--img-size: expected an integer from 16 to 8192, got '12x'"), std::string::npos) << r.output;
  r = sh(c + tmp("no_dir/x.onnx"));
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.output.find("folder '" + tmp("no_dir") + "' does not exist"), std::string::npos) << r.output;
  // a folder with a broken config.json / without weights
  const std::string dir = tmp("export_bad_hf");
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/config.json") << "{\"architecture\": \"test_mambaout\", \"num_classes\": \"3\"}";
  r = sh(kBin + "mo_convert " + dir + " " + tmp("y.pth"));
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.output.find(dir + "/config.json: 'num_classes' is not an integer"), std::string::npos) << r.output;
  std::ofstream(dir + "/config.json") << "{\"architecture\": \"test_mambaout\", \"num_classes\": 3, "
                                         "\"pretrained_cfg\": {\"crop_pct\": 2}}";
  r = sh(kBin + "mo_convert " + dir + " " + tmp("y.pth"));
  EXPECT_NE(r.output.find("crop_pct 2 is out of range"), std::string::npos) << r.output;
  std::ofstream(dir + "/config.json") << "{\"architecture\": \"test_mambaout\", \"num_classes\": 3}";
  r = sh(kBin + "mo_convert " + dir + " " + tmp("y.pth"));
  EXPECT_NE(r.output.find("no model.safetensors next to config.json"), std::string::npos) << r.output;
  // metadata that lies about the settings is refused with the file and key
  tools::register_mo_format();
  nn::io::RawStateDict sd = nn::io::read_checkpoint(checkpoint());
  sd.metadata = {{"arch", "test_mambaout"}, {"crop_pct", "abc"}};
  nn::io::write_checkpoint(sd, tmp("export_lie.safetensors"));
  r = sh(kBin + "mo_predict --weights " + tmp("export_lie.safetensors") + " --device cpu x.jpg");
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.output.find("metadata 'crop_pct' = 'abc' is not a number"), std::string::npos) << r.output;
  for (auto [key, value, says] : {std::tuple<std::string, std::string, std::string>{"img_size", "1e12", "image size"},
                                  {"img_size", "-3", "image size -3 is out of range"},
                                  {"mean", "0.5,0.5", "'mean' = '0.5,0.5' is not 3 comma-separated numbers"},
                                  {"std", "0,1,1", "mean/std"},
                                  {"label_names", "[\"a\", 3]", "'label_names' holds a non-string entry"},
                                  {"label_names", "[\"a\"]", "1 class names (from the checkpoint) but the model has 3 outputs"},
                                  {"interpolation", "nearest", "interpolation 'nearest' is not bicubic or bilinear"}}) {
    SCOPED_TRACE(key + "=" + value);
    sd.metadata = {{"arch", "test_mambaout"}, {key, value}};
    if (key == "std") sd.metadata.emplace_back("mean", "0.5,0.5,0.5");
    nn::io::write_checkpoint(sd, tmp("export_lie.safetensors"));
    r = sh(kBin + "mo_predict --weights " + tmp("export_lie.safetensors") + " --device cpu x.jpg");
    EXPECT_EQ(r.rc, 1);
    EXPECT_NE(r.output.find(says), std::string::npos) << r.output;
    EXPECT_EQ(r.output.find("terminate called"), std::string::npos) << r.output;
  }
  sd.metadata = {{"arch", "test_mambaout"}, {"mean", "0.5,0.5,0.5"}};
  nn::io::write_checkpoint(sd, tmp("export_lie.safetensors"));
  r = sh(kBin + "mo_predict --weights " + tmp("export_lie.safetensors") + " --device cpu x.jpg");
  EXPECT_NE(r.output.find("metadata has 'mean' without 'std'"), std::string::npos) << r.output;
}
