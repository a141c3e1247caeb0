// test_train_tensorboard.cpp: event files written by TensorBoardWriter are read back by our TFRecord
// reader (CRCs checked) and by TensorBoard's own EventAccumulator (scripts/train/read_tb.py, run with
// the python3 on PATH; skipped with a note when the tensorboard package is not installed).
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>

#include "autograd/check.h"
#include "tests/test_util.h"
#include "tests/engine/tensorboard_reader.h"
#include "tools/engine/tensorboard_writer.h"

using namespace mo::tools;
namespace fs = std::filesystem;

namespace {
std::string write_events(const std::string& name) {
  fs::path dir = fs::temp_directory_path() / name;
  fs::remove_all(dir);
  TensorBoardWriter w(dir.string());
  w.add_scalar("train/loss", 2.5, 1);
  w.add_scalar("train/lr", 0.125, 1);
  w.add_scalar("train/loss", 1.25, 2);
  w.add_scalar("eval/top1", 75.5, 2);
  w.flush();
  return w.path();
}
}  // namespace

TEST(TrainTensorBoard, OwnReaderChecksFramingAndCrc) {
  std::string path = write_events("mo_tb_own");
  std::vector<std::string> recs = read_tfrecords(path);
  ASSERT_EQ(recs.size(), 5u);  // file_version + 4 scalars
  std::vector<ScalarEvent> ev = read_scalar_events(path);
  ASSERT_EQ(ev.size(), 4u);
  EXPECT_EQ(ev[0].tag, "train/loss");
  EXPECT_EQ(ev[0].step, 1);
  EXPECT_EQ(ev[0].value, 2.5f);
  EXPECT_EQ(ev[3].tag, "eval/top1");
  EXPECT_EQ(ev[3].value, 75.5f);
  // Flip one byte inside the last record: the reader refuses it, naming the file.
  {
    std::FILE* f = std::fopen(path.c_str(), "r+b");
    std::fseek(f, -6, SEEK_END);
    std::fputc(0x55, f);
    std::fclose(f);
  }
  try {
    read_tfrecords(path);
    FAIL() << "corrupt record accepted";
  } catch (const mo::Error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
}

TEST(TrainTensorBoard, TensorBoardReadsOurEvents) {
  std::string path = write_events("mo_tb_py");
  std::string cmd = "python3 " + std::string(MO_SOURCE_DIR) + "/scripts/train/read_tb.py " +
                    fs::path(path).parent_path().string();
  auto [rc, out] = mo::test::run_command(cmd);
  if (rc == 3) GTEST_SKIP() << "tensorboard is not installed for python3 (pip install -r scripts/train/requirements.txt)";
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("\"train/loss\": [[1, 2.5], [2, 1.25]]"), std::string::npos) << out;
  EXPECT_NE(out.find("\"train/lr\": [[1, 0.125]]"), std::string::npos) << out;
  EXPECT_NE(out.find("\"eval/top1\": [[2, 75.5]]"), std::string::npos) << out;
}
