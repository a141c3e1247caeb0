// test_vit_tools.cpp: ViTs through the real mo_validate, mo_predict and mo_convert binaries. Checkpoints
// written by mo_train (vit_tiny_patch4_32, 3 classes, one step, model.attention full and causal):
//  - mo_predict's logits and top-k are those of a VisionTransformer built here from the checkpoint's
//    tensors in the mode it was trained in; mo_validate's loss is that model's mean cross-entropy over
//    the split, and a causal checkpoint is evaluated causal (its numbers are not the full model's);
//  - mo_convert to .pth, .safetensors and --hf-dir and back keeps every tensor bit for bit, timm's names
//    and the attention mode; another input size and bad metadata are refused, named; the .onnx export
//    runs in onnxruntime with the causal forward's logits and says its attention in metadata_props;
//  - a vit_tiny_patch16_224 state_dict written by torch (tests/reference/vit_ref.py, timm's module names)
//    is predicted by mo_predict as torch computes it, and its .pth and .safetensors exports load into
//    timm's modules with strict=True, tensor for tensor equal.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>

#include "nn/io/json_lite.h"
#include "nn/vit.h"
#include "ops/shape/shape.h"
#include "tests/engine/train_test_util.h"
#include "tests/nn/io/onnx_test_util.h"
#include "tests/test_util.h"
#include "tools/common/inference.h"
#include "tools/engine/checkpoint.h"
#include "tools/engine/weights.h"

using namespace mo;
namespace fs = std::filesystem;
using mo::test::run_command;
using mo::test::tmp_path;

namespace {

const std::string kBin = std::string(MO_BINARY_DIR) + "/tools/";
const std::string kRef = std::string(MO_SOURCE_DIR) + "/tests/reference/vit_ref.py";

const std::string& image_root() {
  static const std::string root = tools::testing::make_image_folder("vit_tools_data", 3, 2, 2);
  return root;
}

// A checkpoint mo_train wrote after one step of vit_tiny_patch4_32 with model.attention `attention`.
std::string train_checkpoint(const std::string& attention) {
  static std::map<std::string, std::string> made;
  if (made.count(attention)) return made[attention];
  const std::string out = tmp_path("vit_run_" + attention), recipe = tmp_path("vit_" + attention + ".yaml");
  std::ofstream(recipe) << "model: {name: vit_tiny_patch4_32, num_classes: 3, attention: " << attention << "}\n"
                        << "data: {root: " << image_root() << ", img_size: 32, workers: 1, crop_pct: 1.0}\n"
                        << "sched: {epochs: 1, warmup_epochs: 0, cooldown_epochs: 0}\n"
                        << "train: {batch_size: 2, global_batch: 2, device: cpu, precision: fp32, eval_every: 0,\n"
                        << "        output: " << out << ", max_steps: 1}\n"
                        << "ckpt: {every_steps: 1, keep_last: 1}\nlog: {progress: lines, tensorboard: false}\n";
  auto r = run_command(kBin + "mo_train " + recipe);
  EXPECT_EQ(r.rc, 0) << r.output;
  return made[attention] = out + "/checkpoints/ckpt-e0000-s00000001.mo";
}

// The checkpoint's weights in a VisionTransformer built here, full or causal.
std::unique_ptr<nn::VisionTransformer> reference(const std::string& ckpt, bool causal) {
  nn::VitConfig c = nn::vit_config("vit_tiny_patch4_32");
  c.num_classes = 3, c.causal = causal;
  auto m = std::make_unique<nn::VisionTransformer>(c, 0, false);
  const tools::CheckpointState s = tools::load_checkpoint(ckpt, false, false);
  EXPECT_EQ(s.model.size(), m->named_parameters().size());
  for (const auto& [n, t] : s.model) m->set_parameter(n, t);
  m->eval();
  return m;
}

// The validation images and their labels (class_<c>).
std::vector<std::pair<std::string, int>> val_images() {
  std::vector<std::pair<std::string, int>> out;
  for (int c = 0; c < 3; ++c)
    for (int i = 0; i < 2; ++i)
      out.emplace_back(image_root() + "/val/class_" + std::to_string(c) + "/" + std::to_string(i) + ".jpg", c);
  return out;
}

// (N, 3) logits of `m` on the images, with the eval transform the checkpoint's recipe names (32 px, crop 1).
std::vector<float> logits_of(const nn::Classifier& m, const std::vector<std::pair<std::string, int>>& images) {
  std::vector<std::string> paths;
  for (const auto& [p, c] : images) paths.push_back(p);
  data::EvalTransformConfig tf;
  tf.size = 32;
  NoGradGuard g;
  return m.forward_nhwc(tools::load_images(paths, tf, Device::cpu(), DType::f32)).to_vector<float>();
}

double mean_cross_entropy(const std::vector<float>& z, const std::vector<std::pair<std::string, int>>& images) {
  double sum = 0;
  for (size_t i = 0; i < images.size(); ++i) {
    const std::vector<double> p = tools::softmax({z.begin() + 3 * i, z.begin() + 3 * (i + 1)});
    sum -= std::log(p[static_cast<size_t>(images[i].second)]);
  }
  return sum / static_cast<double>(images.size());
}

// The number after "loss " in mo_validate's output; NaN when absent.
double validate_loss(const std::string& weights) {
  auto r = run_command(kBin + "mo_validate " + weights + " --data " + image_root() + " -j 1");
  EXPECT_EQ(r.rc, 0) << r.output;
  const size_t at = r.output.find(" loss ");
  return at == std::string::npos ? NAN : std::stod(r.output.substr(at + 6));
}

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

}  // namespace

TEST(VitTools, PredictAndValidateRunTheCheckpointInItsAttentionMode) {
  const auto images = val_images();
  for (const std::string mode : {"full", "causal"}) {
    SCOPED_TRACE(mode);
    const std::string ckpt = train_checkpoint(mode);
    const std::vector<float> want = logits_of(*reference(ckpt, mode == "causal"), images);
    const std::vector<float> other = logits_of(*reference(ckpt, mode != "causal"), images);
    // mo_predict --logits: the reference's logits and top-k, image by image
    const std::string json = tmp_path("vit_predict_" + mode + ".json");
    std::string args;
    for (const auto& [p, c] : images) args += " " + p;
    auto r = run_command(kBin + "mo_predict --weights " + ckpt + args + " --logits --topk 2 -b 4 -o " + json);
    ASSERT_EQ(r.rc, 0) << r.output;
    EXPECT_EQ(r.output.find("causal attention") != std::string::npos, mode == "causal") << r.output;
    nn::io::Json j = nn::io::parse_json(slurp(json), json);
    const nn::io::Json* im = j.get("images");
    ASSERT_TRUE(im && im->array.size() == images.size()) << slurp(json);
    double off_other = 0;
    for (size_t i = 0; i < images.size(); ++i) {
      const std::vector<float> row(want.begin() + 3 * i, want.begin() + 3 * (i + 1));
      const nn::io::Json& logits = *im->array[i].get("logits");
      for (size_t k = 0; k < 3; ++k) {
        EXPECT_NEAR(logits.array[k].d, row[k], 1e-5 * (1 + std::abs(row[k]))) << images[i].first;
        off_other = std::max(off_other, std::abs(double(other[3 * i + k]) - row[k]));
      }
      const std::vector<int64_t> top = tools::top_classes(tools::softmax(row), 2);
      const nn::io::Json& got = *im->array[i].get("top");
      ASSERT_EQ(got.array.size(), 2u);
      for (size_t k = 0; k < 2; ++k) EXPECT_EQ(got.array[k].get("index")->i, top[k]) << images[i].first;
    }
    ASSERT_GT(off_other, 1e-3) << "the two attention modes give the same logits: the test cannot tell them apart";
    // mo_validate: the reference's mean cross-entropy (printed to 4 places), not the other mode's
    const double loss = validate_loss(ckpt), ref = mean_cross_entropy(want, images);
    EXPECT_NEAR(loss, ref, 1e-4);
    const double other_loss = mean_cross_entropy(other, images);
    if (std::abs(other_loss - ref) > 1e-3) EXPECT_GT(std::abs(loss - other_loss), 5e-4);
    // the same weights exported to .pth keep the mode (metadata 'attention'), and so does --hf-dir
    const std::string pth = tmp_path("vit_" + mode + ".pth"), dir = tmp_path("vit_hf_" + mode);
    ASSERT_EQ(run_command(kBin + "mo_convert " + ckpt + " " + pth).rc, 0);
    ASSERT_EQ(run_command(kBin + "mo_convert " + ckpt + " --hf-dir " + dir).rc, 0);
    for (const std::string& w : {pth, dir}) {
      tools::LoadedModel m = tools::load_model_for_eval(w, "", Device::cpu(), DType::f32);
      EXPECT_EQ(m.attention, mode) << w;
      const std::vector<float> got = logits_of(*m.model, images);
      for (size_t k = 0; k < want.size(); ++k) EXPECT_NEAR(got[k], want[k], 1e-5 * (1 + std::abs(want[k]))) << w;
    }
    EXPECT_NEAR(validate_loss(pth), ref, 1e-4);
  }
}

TEST(VitTools, ConvertRoundTripsBitForBitWithTimmNames) {
  const std::string ckpt = train_checkpoint("causal");
  const tools::CheckpointState s = tools::load_checkpoint(ckpt, false, false);
  const std::string pth = tmp_path("vit_rt.pth"), st = tmp_path("vit_rt.safetensors"), back = tmp_path("vit_rt.mo");
  const std::string dir = tmp_path("vit_rt_hf"), pth2 = tmp_path("vit_rt2.pth");
  for (const std::string& cmd : {ckpt + " " + pth, pth + " " + st, st + " " + back, back + " " + pth2,
                                 ckpt + " " + pth2 + ".safetensors --names timm", st + " --hf-dir " + dir}) {
    auto r = run_command(kBin + "mo_convert " + cmd);
    ASSERT_EQ(r.rc, 0) << cmd << "\n" << r.output;
  }
  tools::register_mo_format();
  for (const std::string& f : {pth, st, back, pth2, pth2 + ".safetensors", dir + "/model.safetensors"}) {
    SCOPED_TRACE(f);
    const bool hf = f == dir + "/model.safetensors";
    const nn::io::RawStateDict sd = hf ? tools::read_hf_dir(dir) : nn::io::read_checkpoint(f);
    ASSERT_EQ(sd.tensors.size(), s.model.size());
    for (size_t i = 0; i < s.model.size(); ++i) {
      EXPECT_EQ(sd.tensors[i].first, s.model[i].first);  // the model's names are timm's, in timm's order
      EXPECT_EQ(nn::io::tensor_from_raw(sd.tensors[i].second).to_vector<float>(), s.model[i].second.to_vector<float>())
          << s.model[i].first;
    }
    std::map<std::string, std::string> md(sd.metadata.begin(), sd.metadata.end());
    EXPECT_EQ(md["arch"], "vit_tiny_patch4_32");
    EXPECT_EQ(md["attention"], "causal");
  }
  const std::string cfg = slurp(dir + "/config.json");
  for (const char* want : {"\"global_pool\": \"token\"", "\"attention\": \"causal\"", "\"num_features\": 192",
                           "\"first_conv\": \"patch_embed.proj\"", "\"classifier\": \"head\""})
    EXPECT_NE(cfg.find(want), std::string::npos) << want << "\n" << cfg;
  // bad attention metadata: named
  nn::io::RawStateDict sd = nn::io::read_checkpoint(st);
  tools::set_metadata(sd.metadata, "attention", "casual");
  EXPECT_NE(mo::test::error_of([&] { tools::model_from_state_dict(sd, "x.safetensors", ""); })
                .find("x.safetensors: metadata 'attention' = 'casual' is not full or causal"), std::string::npos);
  tools::set_metadata(sd.metadata, "attention", "causal");
  EXPECT_NE(mo::test::error_of([&] { tools::model_from_state_dict(sd, "x.safetensors", "mambaout_femto"); })
                .find("'x.safetensors': metadata 'attention' = 'causal' applies to ViT models only"),
            std::string::npos);
  const std::string causal_mambaout = tmp_path("causal_mambaout.safetensors");
  nn::io::write_checkpoint(sd, causal_mambaout);
  auto r = run_command(kBin + "mo_convert " + causal_mambaout + " " + tmp_path("y.pth") + " --arch mambaout_femto");
  EXPECT_NE(r.output.find("metadata 'attention' = 'causal' applies to ViT models only, not to mambaout_femto"),
            std::string::npos) << r.output;
  // a file that says nothing: --model / --arch name it, and the size is the ViT's own (another one is refused)
  sd.metadata.clear();
  const std::string bare = tmp_path("vit_bare.safetensors");
  nn::io::write_checkpoint(sd, bare);
  r = run_command(kBin + "mo_predict -m vit_tiny_patch4_32 -w " + bare + " " + image_root() + "/val/class_0/0.jpg");
  EXPECT_EQ(r.rc, 0) << r.output;
  EXPECT_NE(r.output.find("preprocessing 32 px (default)"), std::string::npos) << r.output;
  for (const std::string& cmd :
       {"mo_predict --img-size 48 -w " + ckpt + " " + image_root() + "/val/class_0/0.jpg",
        "mo_convert " + bare + " " + tmp_path("x.pth") + " --arch vit_tiny_patch4_32 --img-size 48"}) {
    r = run_command(kBin + cmd);
    EXPECT_EQ(r.rc, 1) << r.output;
    EXPECT_NE(r.output.find("error: vit_tiny_patch4_32 takes 32 px images only (its position embedding is fixed), not "
                            "48 px (--img-size)"), std::string::npos) << r.output;
  }
  r = run_command(kBin + "mo_convert " + st + " " + tmp_path("x.pth") + " --arch vit_huge");
  EXPECT_NE(r.output.find("--arch: unknown model 'vit_huge'; known: "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("vit_small_patch4_32"), std::string::npos) << r.output;
}

TEST(VitTools, OnnxOfACausalCheckpointGivesTheCausalLogits) {
  MO_SKIP_WITHOUT_ONNXRUNTIME();
  const std::string ckpt = train_checkpoint("causal"), onnx = tmp_path("vit_causal.onnx");
  auto r = run_command(kBin + "mo_convert " + ckpt + " " + onnx);
  ASSERT_EQ(r.rc, 0) << r.output;
  const auto images = val_images();
  std::vector<std::string> paths;
  for (const auto& [p, c] : images) paths.push_back(p);
  data::EvalTransformConfig tf;
  tf.size = 32;
  const std::string in = tmp_path("vit_onnx_x.npy"), out = tmp_path("vit_onnx_y.npy"), info = tmp_path("vit_onnx.json");
  mo::test::save_npy(in, nhwc_to_nchw(tools::load_images(paths, tf, Device::cpu(), DType::f32)).contiguous());
  r = onnx_test::onnx_run(onnx, in, out, info);
  ASSERT_EQ(r.rc, 0) << r.output;
  const std::vector<float> got = mo::test::load_npy(out).to_vector<float>();
  const std::vector<float> want = logits_of(*reference(ckpt, true), images);
  ASSERT_EQ(got.size(), want.size());
  for (size_t k = 0; k < want.size(); ++k) EXPECT_NEAR(got[k], want[k], 1e-4 * (1 + std::abs(want[k]))) << k;
  const nn::io::Json j = nn::io::parse_json(slurp(info), info);
  EXPECT_EQ(j.get("metadata")->get("attention")->s, "causal");
  EXPECT_EQ(j.get("metadata")->get("arch")->s, "vit_tiny_patch4_32");
}

TEST(VitTools, TorchWrittenVitTinyPredictsAsTorchAndExportsLoadStrict) {
  if (!mo::test::python_has_torch()) GTEST_SKIP() << "Debian's python3-torch is not installed";
  const std::string dir = mo::test::temp_dir("vit_timm");
  const std::string image = image_root() + "/val/class_1/0.jpg";
  data::EvalTransformConfig tf;  // 224 px, crop 1, bicubic: the defaults of a file that carries none
  const Tensor x = tools::load_images({image}, tf, Device::cpu(), DType::f32);  // (1, 224, 224, 3)
  mo::test::save_npy(dir + "/x.npy", nhwc_to_nchw(x).contiguous());
  // torch: timm's vit_tiny_patch16_224 (vit_ref.py's modules) with seeded random weights, its logits on x
  const std::string script = dir + "/make.py";
  const std::string head = "import sys, numpy as np, torch\nsys.path.insert(0, '" +
                           fs::path(kRef).parent_path().string() + "')\nimport vit_ref\n";
  std::ofstream(script) << head << "torch.manual_seed(0)\n"
                           "m = vit_ref.VisionTransformer(224, 16, 192, 12, 3, 1000, 0).eval()\n"
                           "for p in m.parameters(): torch.nn.init.normal_(p, std=0.05)\n"
                           "torch.save(m.state_dict(), sys.argv[1] + '/timm.pth')\n"
                           "with torch.no_grad(): y = m(torch.from_numpy(np.load(sys.argv[1] + '/x.npy')))\n"
                           "np.save(sys.argv[1] + '/y.npy', y.numpy())\n";
  ASSERT_EQ(mo::test::run_python(script, dir), 0);
  const std::string json = dir + "/p.json";
  auto r = run_command(kBin + "mo_predict -m vit_tiny_patch16_224 --weights " + dir + "/timm.pth " + image +
                       " --logits --json -o " + json);
  ASSERT_EQ(r.rc, 0) << r.output;
  const nn::io::Json j = nn::io::parse_json(slurp(json), json);
  const nn::io::Json* z = j.get("images")->array[0].get("logits");
  ASSERT_TRUE(z && z->array.size() == 1000u);
  const std::vector<float> y = mo::test::load_npy(dir + "/y.npy").to_vector<float>();
  double worst = 0, scale = 0;
  for (size_t k = 0; k < 1000; ++k) {
    worst = std::max(worst, std::abs(z->array[k].d - y[k]));
    scale = std::max(scale, std::abs(double(y[k])));
  }
  EXPECT_LE(worst, 1e-4 * scale) << "largest logit " << scale;
  // mo_convert --arch: .mo, then .pth and .safetensors with timm's names, which timm's modules load strictly
  for (const std::string& cmd : {dir + "/timm.pth " + dir + "/w.mo --arch vit_tiny_patch16_224",
                                 dir + "/w.mo " + dir + "/out.pth --names timm",
                                 dir + "/w.mo " + dir + "/out.safetensors"}) {
    r = run_command(kBin + "mo_convert " + cmd);
    ASSERT_EQ(r.rc, 0) << r.output;
  }
  std::ofstream(script) << head << "m = vit_ref.VisionTransformer(224, 16, 192, 12, 3, 1000, 0)\n"
                           "from safetensors.torch import load_file\nref = torch.load(sys.argv[1] + '/timm.pth')\n"
                           "d = sys.argv[1]\nfor sd in (torch.load(d + '/out.pth'), load_file(d + '/out.safetensors')):\n"
                           "    m.load_state_dict(sd, strict=True)\n"
                           "    assert list(sd) == list(m.state_dict()) == list(ref), list(sd)\n"
                           "    assert all(torch.equal(sd[k], ref[k]) for k in ref)\n";
  ASSERT_EQ(mo::test::run_python(script, dir), 0);
  fs::remove_all(dir);
}
