// test_train_run_folder.cpp: what a run leaves in its folder (CPU, tiny model):
//  - train.output: auto makes output/train/<YYYYmmdd>-<HHMMSS>-<model>-<img> under the working directory,
//    a new one (with -1, -2, ...) for a run started in the same second; auto with resume=auto is refused;
//  - log.txt holds exactly what the console showed (plain lines), including the evaluation progress and
//    each epoch's input line (the step's wait for batches, the loader's time by stage);
//  - checkpoints/last.mo is a link to the newest checkpoint, also after a resume;
//  - curves.svg is well-formed XML whose series are summary.csv's values (check_curves_svg.py with
//    xml.etree), and text in it is escaped; a folder or pipe at curves.svg or log.txt is refused at the start.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <regex>
#include <sstream>

#include "tests/test_util.h"
#include "tests/engine/train_test_util.h"
#include "tools/engine/curves.h"
#include "tools/common/omp_env.h"
#include "tools/engine/run_folder.h"
#include "tools/engine/trainer.h"

using namespace mo;
using namespace mo::tools;
using namespace mo::tools::testing;

namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

const std::string& folder() {
  static const std::string root = make_image_folder("mo_run_folder_data", 3, 12, 4);
  return root;
}

// Runs `c` with the console going to a file; returns the console text and the run folder.
std::pair<std::string, std::string> run(const TrainConfig& c) {
  std::FILE* out = std::tmpfile();
  std::string dir;
  {
    Trainer t(c, nullptr, out);
    t.fit();
    dir = t.output_dir();
  }
  std::rewind(out);
  std::string text(1 << 18, '\0');
  text.resize(std::fread(text.data(), 1, text.size(), out));
  std::fclose(out);
  return {text, dir};
}

// Changes the working directory for the scope.
struct InDir {
  std::string old;
  explicit InDir(const std::string& d) : old(fs::current_path().string()) {
    fs::create_directories(d);
    fs::current_path(d);
  }
  ~InDir() { fs::current_path(old); }
};

}  // namespace

TEST(RunFolder, Names) {
  const std::time_t t = 1767268800;  // 2026-01-01 12:00:00 UTC
  std::tm tm{};
  localtime_r(&t, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &tm);
  EXPECT_EQ(run_folder_name(t, "mambaout_femto", 224), std::string("output/train/") + stamp + "-mambaout_femto-224");
  EXPECT_EQ(run_folder_name(t, "mambaout_femto", 32, 2), std::string("output/train/") + stamp + "-mambaout_femto-32-2");
}

TEST(RunFolder, AutoOutputLogLastLinkAndCurves) {
  InDir cd(mo::test::tmp_path("mo_run_folder_cwd"));
  fs::remove_all("output");
  TrainConfig c = small_config(folder(), "auto", false);
  c.train.max_steps = 8;  // two epochs of 4 steps, each evaluated
  const auto [console, dir] = run(c);
  EXPECT_TRUE(std::regex_match(dir, std::regex(R"(output/train/\d{8}-\d{6}-test_mambaout-32)"))) << dir;
  // log.txt: exactly the console's text (rank 0 in plain-line mode), evaluation progress included.
  const std::string log = read_text(dir + "/log.txt");
  EXPECT_EQ(log, console);
  EXPECT_NE(log.find("epoch 1: train loss "), std::string::npos) << log;
  EXPECT_NE(log.find("eval 2/2 batches"), std::string::npos) << log;
  // each epoch's input line: the wait for batches against the epoch's time, and the stages' shares
  const std::regex input(R"(epoch 1: input: the step waited \d+\.\d s of \d+\.\d s for batches \(\d+\.\d%\))"
                         R"(.*workers .* busy.*decode \d+%)");
  EXPECT_TRUE(std::regex_search(log, input)) << log;
  EXPECT_NE(read_text(dir + "/config.yaml").find("output: " + dir), std::string::npos);
  // last.mo links to the newest checkpoint.
  const std::string last = dir + "/checkpoints/last.mo";
  ASSERT_TRUE(fs::is_symlink(last));
  EXPECT_EQ(fs::read_symlink(last).string(), "ckpt-e0002-s00000008.mo");
  EXPECT_TRUE(is_mo_checkpoint(last));
  // curves.svg agrees with summary.csv.
  const auto check = mo::test::run_command(std::string(MO_PYTHON) + " " + MO_SOURCE_DIR +
                                           "/tests/engine/check_curves_svg.py " + dir);
  EXPECT_EQ(check.rc, 0) << check.output;
  EXPECT_NE(check.output.find("curves.svg: 5 series checked"), std::string::npos) << check.output;  // train/eval loss, top-1, lr, images/s

  // A second run at once gets its own folder (with a suffix within the same second).
  const auto [console2, dir2] = run(c);
  EXPECT_NE(dir2, dir);
  EXPECT_TRUE(std::regex_match(dir2, std::regex(R"(output/train/\d{8}-\d{6}-test_mambaout-32(-1)?)"))) << dir2;
  // Resuming a run folder: last.mo follows the newest checkpoint.
  TrainConfig more = c;
  more.train.output = dir;
  more.train.resume = "auto";
  more.train.max_steps = 12;
  run(more);
  EXPECT_EQ(fs::read_symlink(last).string(), "ckpt-e0003-s00000012.mo");
  EXPECT_NE(read_text(dir + "/log.txt").find("resumed from " + dir + "/checkpoints/ckpt-e0002-s00000008.mo"),
            std::string::npos);

  c.train.resume = "auto";
  const std::string e = mo::test::error_of([&] { c.validate(); });
  EXPECT_NE(e.find("config keys 'train.output' and 'train.resume' are both 'auto'"), std::string::npos) << e;
}

TEST(RunFolder, ACurvesOrLogPathThatIsNotAFileIsRefusedAtTheStart) {
  for (const char* name : {"curves.svg", "log.txt"}) {
    TrainConfig c = small_config(folder(), mo::test::tmp_path(std::string("mo_run_folder_bad_") + name));
    fs::create_directories(c.train.output + "/" + name);  // a folder where the file goes
    const std::string e = mo::test::error_of([&] { Trainer t(c, nullptr, std::fopen("/dev/null", "w")); });
    EXPECT_NE(e.find("'" + c.train.output + "/" + name + "' is not a regular file"), std::string::npos) << e;
  }
}

TEST(RunFolder, CurvesEscapeTextAndDrawEmptyPanels) {
  const std::string dir = mo::test::tmp_path("mo_curves_escape");
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::ofstream(dir + "/summary.csv") << "epoch,train_loss,lr\n0,2.5,0.001\n1,inf,0.002\n2,1.5,0.003\n";
  write_curves_svg(dir + "/summary.csv", dir + "/curves.svg", "run <a> & \"b\" 'c' \x01");
  const std::string svg = read_text(dir + "/curves.svg");
  EXPECT_NE(svg.find("run &lt;a&gt; &amp; &quot;b&quot; &apos;c&apos; </text>"), std::string::npos) << svg;
  EXPECT_NE(svg.find("no data yet"), std::string::npos);  // top-1 and images/s have no values
  EXPECT_NE(svg.find("data-values=\"0:2.5 2:1.5\""), std::string::npos) << svg;  // inf is left out
  const auto check = mo::test::run_command(std::string(MO_PYTHON) + " " + MO_SOURCE_DIR +
                                           "/tests/engine/check_curves_svg.py " + dir);
  EXPECT_EQ(check.rc, 0) << check.output;
  EXPECT_NE(check.output.find("2 series checked"), std::string::npos) << check.output;
  // One epoch only, and a constant series: still drawn (a centred point, a widened range).
  std::ofstream(dir + "/summary.csv", std::ios::trunc) << "epoch,train_loss,lr\n0,2.5,0.001\n";
  write_curves_svg(dir + "/summary.csv", dir + "/curves.svg", "one");
  EXPECT_EQ(mo::test::run_command(std::string(MO_PYTHON) + " " + MO_SOURCE_DIR + "/tests/engine/check_curves_svg.py " +
                                  dir).rc, 0);
  EXPECT_NE(mo::test::error_of([&] { write_curves_svg(dir + "/missing.csv", dir + "/x.svg", "t"); }).find(
                "cannot read '" + dir + "/missing.csv' for the curves"),
            std::string::npos);
}
