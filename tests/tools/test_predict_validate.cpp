// test_predict_validate.cpp: the scriptable outputs of the real mo_predict and mo_validate binaries on a
// small trained checkpoint: mo_predict's JSON and CSV (top-k, probabilities that are the softmax of the
// logits, per-image errors in place and exit status 1), folders, @lists, batches that do not change the
// answers, PNG and WebP copies of a JPEG (PIL-written, same pixels) giving the JPEG's exact answer;
// mo_validate's --results-file in timm's fields, CSV and JSON, and its progress line; --use-ema in both
// giving the answers of the EMA weights exported by mo_convert --entry state_dict_ema. The JSON and CSV are
// read back with Debian's python3 (json, csv modules).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "tests/test_util.h"
#include "tests/engine/train_test_util.h"

namespace fs = std::filesystem;
using mo::test::run_command;
using mo::test::tmp_path;

namespace {

const std::string kBin = std::string(MO_BINARY_DIR) + "/tools/";

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

// 3 classes of 32 px images and a checkpoint trained on them for 2 steps, with an EMA of the weights.
struct Fixture {
  std::string root, ckpt;
};
const Fixture& fixture() {
  static const Fixture f = [] {
    Fixture x;
    x.root = mo::tools::testing::make_image_folder("predict_validate_data", 3, 4, 3);
    const std::string out = tmp_path("pv_run"), yaml = tmp_path("pv.yaml");
    std::ofstream(yaml) << "model: {name: test_mambaout, num_classes: 3}\nmodel_ema: true\n"
                           "data: {root: " << x.root << ", img_size: 32, workers: 1, crop_pct: 1.0}\n"
                           "sched: {epochs: 2, warmup_epochs: 0, cooldown_epochs: 0}\n"
                           "train: {batch_size: 4, global_batch: 4, device: cpu, precision: fp32, eval_every: 0,\n"
                           "        output: " << out << ", max_steps: 2}\n"
                           "ckpt: {every_steps: 2}\nlog: {progress: lines, tensorboard: false}\n";
    auto r = run_command(kBin + "mo_train " + yaml);
    EXPECT_EQ(r.rc, 0) << r.output;
    x.ckpt = out + "/checkpoints/ckpt-e0000-s00000002.mo";
    return x;
  }();
  return f;
}

// Runs a Python snippet (Debian's python3) with argv; true when it exits 0 (its output goes to the log).
bool python_ok(const std::string& code, const std::string& args) {
  const std::string script = tmp_path("check_" + std::to_string(std::hash<std::string>{}(code)) + ".py");
  std::ofstream(script) << code;
  auto r = run_command(std::string(MO_PYTHON) + " " + script + " " + args);
  if (r.rc != 0) ADD_FAILURE() << code << "\n" << r.output;
  return r.rc == 0;
}

class PredictValidate : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string(MO_PYTHON).empty() || run_command(std::string(MO_PYTHON) + " -c 'import PIL'").rc != 0)
      GTEST_SKIP() << "Debian's python3 with PIL is not available";
  }
};

TEST_F(PredictValidate, JsonFolderWithPngWebpAndABadFile) {
  const Fixture& f = fixture();
  const std::string dir = tmp_path("pv_images");
  fs::remove_all(dir);
  fs::create_directories(dir + "/sub");
  const std::string jpg = f.root + "/val/class_1/0.jpg";
  fs::copy_file(jpg, dir + "/a.jpg");
  // PIL's JPEG decode is ours bit for bit: its lossless PNG and WebP copies hold the same pixels
  ASSERT_EQ(run_command(std::string(MO_PYTHON) + " -c \"from PIL import Image; im = Image.open('" + jpg +
                        "').convert('RGB'); im.save('" + dir + "/b.png'); im.save('" + dir +
                        "/sub/c.webp', lossless=True)\"").rc, 0);
  std::ofstream(dir + "/sub/d.png") << "not a png";
  std::ofstream(dir + "/notes.txt") << "not an image, not listed";
  const std::string json = tmp_path("pv.json");
  auto r = run_command("sh -c '" + kBin + "mo_predict --weights " + f.ckpt + " " + dir +
                       " --json --logits -b 2 --topk 3 2>&1 >" + json + "'");  // stderr to the output, stdout to json
  EXPECT_EQ(r.rc, 1) << r.output;  // d.png cannot be decoded
  EXPECT_NE(r.output.find("cannot decode '" + dir + "/sub/d.png': not a JPEG, PNG or WebP file"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("mo_predict: 4/4 images"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("1 of 4 images could not be read or decoded"), std::string::npos) << r.output;
  EXPECT_TRUE(python_ok(R"(
import json, math, sys
d = json.load(open(sys.argv[1]))
im = d["images"]
assert [i["path"].rsplit("/", 1)[1] for i in im] == ["a.jpg", "b.png", "c.webp", "d.png"], im
assert d["num_classes"] == 3 and d["topk"] == 3 and d["errors"] == 1 and d["preprocess"]["img_size"] == 32, d
assert "not a JPEG, PNG or WebP" in im[3]["error"] and "top" not in im[3]
for i in im[:3]:
    z = i["logits"]; m = max(z); e = [math.exp(v - m) for v in z]; p = [v / sum(e) for v in e]
    assert len(z) == 3 and [t["index"] for t in i["top"]] == sorted(range(3), key=lambda c: -p[c]), i
    for t in i["top"]:
        assert abs(t["prob"] - p[t["index"]]) < 1e-6 and t["name"] == "class_%d" % t["index"], i
assert im[0]["top"] == im[1]["top"] == im[2]["top"] and im[0]["logits"] == im[1]["logits"] == im[2]["logits"], im
)", json));
}

TEST_F(PredictValidate, CsvFromAListAndBatchSizesAgree) {
  const Fixture& f = fixture();
  const std::string list = tmp_path("pv_list.txt"), csv = tmp_path("pv.csv");
  std::ofstream(list) << "# the validation images\n" << f.root << "/val/class_0/0.jpg\n\n"
                      << f.root << "/val/class_2/1.jpg\r\n" << f.root << "/val/class_1\n";
  const std::string p = kBin + "mo_predict --weights " + f.ckpt + " @" + list;
  // one image a batch or all in one: the same listing (stdout only; the progress line is on stderr)
  auto one = run_command("sh -c '" + p + " -b 1 2>/dev/null'"), many = run_command("sh -c '" + p + " -b 64 2>/dev/null'");
  ASSERT_EQ(one.rc, 0) << one.output;
  EXPECT_EQ(one.output, many.output);
  EXPECT_EQ(one.output.rfind(f.root + "/val/class_0/0.jpg\n", 0), 0u) << one.output;
  auto r = run_command(p + " --output " + csv + " --logits");
  ASSERT_EQ(r.rc, 0) << r.output;
  EXPECT_NE(r.output.find("wrote 5 predictions to " + csv), std::string::npos) << r.output;
  EXPECT_TRUE(python_ok(R"(
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
assert len(rows) == 5 and rows[0]["path"].endswith("class_0/0.jpg") and rows[2]["path"].endswith("class_1/0.jpg"), rows
for r in rows:
    assert r["error"] == "" and r["top1_name"] == "class_" + r["top1_index"], r
    z = [float(r["logit_%d" % c]) for c in range(3)]
    assert int(r["top1_index"]) == z.index(max(z)), r
    assert float(r["top1_prob"]) >= float(r["top2_prob"]) >= float(r["top3_prob"]) and "top4_prob" not in r, r  # k = min(topk, classes)
)", csv));
}

TEST_F(PredictValidate, PredictInputMistakes) {
  const Fixture& f = fixture();
  const std::string p = kBin + "mo_predict --weights " + f.ckpt + " ";
  const std::string empty = tmp_path("pv_empty");
  fs::create_directories(empty);
  struct Case {
    std::string args, says;
  } cases[] = {
      {f.root + "/val/class_0/0.jpg --output x.txt", "--output 'x.txt': the file name must end in .json or .csv"},
      {tmp_path("nothing.png"), "error: cannot read '" + tmp_path("nothing.png") + "': cannot open: No such file"},
      {empty, "the folder '" + empty + "' holds no image files"},
      {"@" + tmp_path("no_list.txt"), "cannot read the list file '" + tmp_path("no_list.txt") + "'"},
      {f.root + "/val/class_0/0.jpg -b 0", "--batch-size: expected an integer from 1"},
  };
  for (const Case& c : cases) {
    auto r = run_command(p + c.args);
    EXPECT_TRUE(r.rc == 1 || r.rc == 2) << c.args << ": " << r.output;
    EXPECT_NE(r.output.find(c.says), std::string::npos) << c.args << ": " << r.output;
  }
  // a stale entry of a list is reported in its place; the others are predicted
  const std::string list = tmp_path("pv_bad_list.txt"), empty_list = tmp_path("pv_empty_list.txt");
  std::ofstream(list) << f.root << "/val/class_0/0.jpg\n" << f.root << "/val/class_0/typo.jpg\n";
  auto r = run_command(p + "@" + list);
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.output.find(f.root + "/val/class_0/typo.jpg\n  error: cannot read '" + f.root +
                          "/val/class_0/typo.jpg': cannot open: No such file"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(f.root + "/val/class_0/0.jpg\n  "), std::string::npos) << r.output;
  std::ofstream(empty_list) << "# nothing\n\n";
  r = run_command(p + "@" + empty_list);
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.output.find("the list file '" + empty_list + "' names no images"), std::string::npos) << r.output;
}

TEST_F(PredictValidate, ValidateResultsFile) {
  const Fixture& f = fixture();
  const std::string csv = tmp_path("pv_results.csv"), json = tmp_path("pv_results.json");
  const std::string v = kBin + "mo_validate " + f.ckpt + " --data " + f.root + " --workers 1 --batch-size 2";
  auto r = run_command(v + " --results-file " + csv);
  ASSERT_EQ(r.rc, 0) << r.output;
  EXPECT_NE(r.output.find("mo_validate: 5/5 batches (100%)"), std::string::npos) << r.output;
  const std::string top1 = r.output.substr(r.output.find("top-1 ") + 6, r.output.find('%', r.output.find("top-1 ")) -
                                                                            r.output.find("top-1 ") - 6);
  auto rj = run_command(v + " --results-file " + json);
  ASSERT_EQ(rj.rc, 0) << rj.output;
  EXPECT_TRUE(python_ok(R"(
import csv, json, sys
c = list(csv.DictReader(open(sys.argv[1])))
j = json.load(open(sys.argv[2]))
keys = ["model", "top1", "top1_err", "top5", "top5_err", "param_count", "img_size", "crop_pct", "interpolation"]
assert len(c) == 1 and list(c[0].keys()) == keys and list(j.keys()) == keys, (c, j)
assert j["model"] == c[0]["model"] == "test_mambaout" and j["img_size"] == 32 and j["interpolation"] == "bicubic", j
assert abs(j["top1"] - float(sys.argv[3])) < 1e-3 and abs(j["top1"] + j["top1_err"] - 100) < 1e-9, j
assert j["top5"] == 100 and float(c[0]["top1"]) == j["top1"] and 0 < j["param_count"] < 1, j
)", csv + " " + json + " " + top1));
  // a results file the program cannot name the format of fails before the work
  auto bad = run_command(v + " --results-file out.xlsx");
  EXPECT_EQ(bad.rc, 1);
  EXPECT_NE(bad.output.find("--results-file 'out.xlsx': the file name must end in .json or .csv"), std::string::npos)
      << bad.output;
}

TEST_F(PredictValidate, UseEmaIsTheExportedEma) {
  const Fixture& f = fixture();
  const std::string ema = tmp_path("pv_ema.safetensors"), img = f.root + "/val/class_2/0.jpg";
  auto c = run_command(kBin + "mo_convert " + f.ckpt + " " + ema + " --entry state_dict_ema");
  ASSERT_EQ(c.rc, 0) << c.output;
  const std::string own = tmp_path("pv_own.json"), use = tmp_path("pv_use_ema.json"), exported = tmp_path("pv_ema.json");
  const std::string p = kBin + "mo_predict --json --logits " + img;
  for (const auto& [args, out] : {std::pair{" -w " + f.ckpt, own}, {" -w " + f.ckpt + " --use-ema", use},
                                  {" --weights " + ema, exported}}) {
    auto r = run_command("sh -c '" + p + args + " 2>&1 >" + out + "'");
    ASSERT_EQ(r.rc, 0) << args << "\n" << r.output;
  }
  EXPECT_TRUE(python_ok(R"(
import json, sys
own, use, exported = (json.load(open(a))["images"] for a in sys.argv[1:4])
assert use == exported, (use, exported)
assert use[0]["logits"] != own[0]["logits"], (use, own)  # two steps apart: the EMA is not the model
)", own + " " + use + " " + exported));
  const std::string v = kBin + "mo_validate " + f.ckpt + " --data " + f.root + " -j 1 -b 4";
  auto a = run_command(v + " --use-ema"), b = run_command(kBin + "mo_validate " + ema + " --data " + f.root + " -j 1 -b 4");
  ASSERT_EQ(a.rc, 0) << a.output;
  ASSERT_EQ(b.rc, 0) << b.output;
  EXPECT_NE(a.output.find("(entry state_dict_ema)"), std::string::npos) << a.output;
  // "top-1 X%  top-5 Y%  loss Z": the same numbers
  auto numbers = [](const std::string& o) {
    const size_t i = o.find("top-1 ");
    return i == std::string::npos ? o : o.substr(i, o.find("  (", i) - i);
  };
  EXPECT_EQ(numbers(a.output), numbers(b.output)) << a.output << b.output;
}

}  // namespace
