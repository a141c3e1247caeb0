// test_train_logging.cpp: plain progress lines off a terminal, summary.csv rows (a resumed epoch
// replaces its row instead of duplicating it).
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "autograd/check.h"
#include "tools/engine/progress.h"

using namespace mo::tools;
namespace fs = std::filesystem;

TEST(TrainLogging, PlainLinesEveryNSteps) {
  std::FILE* f = std::tmpfile();
  Progress p(f, "auto", 2);  // a file is not a terminal: plain lines
  EXPECT_FALSE(p.is_bar());
  for (int64_t i = 1; i <= 5; ++i) {
    StepStats s;
    s.epoch = 0;
    s.total_epochs = 3;
    s.step_in_epoch = i;
    s.steps_per_epoch = 5;
    s.global_step = i;
    s.loss = 1.0 / static_cast<double>(i);
    s.lr = 1e-3;
    s.images_per_s = 100;
    s.eta_s = 3725;
    p.step(s);
  }
  std::rewind(f);
  char buf[4096] = {};
  size_t n = std::fread(buf, 1, sizeof(buf) - 1, f);
  std::fclose(f);
  std::string out(buf, n);
  // Steps 2 and 4 (every 2) and 5 (end of epoch).
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 3) << out;
  EXPECT_NE(out.find("epoch 0/3 step 2/5 (2)  loss 0.5000  lr 1.000e-03  100.0 img/s  ETA 1:02:05"), std::string::npos)
      << out;
  EXPECT_NE(out.find("step 5/5"), std::string::npos) << out;
  EXPECT_EQ(out.find('\r'), std::string::npos);
}

TEST(TrainLogging, SummaryCsvRowsPerEpochWithoutDuplicates) {
  std::string path = (fs::temp_directory_path() / "mo_summary_test.csv").string();
  fs::remove(path);
  update_summary_csv(path, {0, 2.5, 1e-6, 2.25, 10.5, 30.25, 3, 0, 0});
  update_summary_csv(path, {1, 2.0, 2e-4, std::nullopt, std::nullopt, std::nullopt});
  update_summary_csv(path, {1, 1.9, 2e-4, 1.5, 40.0, 70.0, 0, 0, 2});  // epoch 1 again after a resume
  auto text = [&] {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  };
  const std::string header = std::string(kSummaryHeader) + "\n";
  EXPECT_EQ(text(), header + "0,2.5,2.25,10.5,30.25,1e-06,3,0,0,,,,,\n1,1.9,1.5,40,70,0.0002,0,0,2,,,,,\n");
  // A file written before the bad-image columns: its rows are kept, padded to the new header.
  std::ofstream(path, std::ios::trunc) << "epoch,train_loss,eval_loss,eval_top1,eval_top5,lr\n"
                                          "0,2.5,2.25,10.5,30.25,1e-06\n";
  update_summary_csv(path, {1, 2.0, 2e-4, std::nullopt, std::nullopt, std::nullopt, 1});
  EXPECT_EQ(text(), header + "0,2.5,2.25,10.5,30.25,1e-06,,,,,,,,\n1,2,,,,0.0002,1,,,,,,,\n");
  // The EMA, gradient-norm and speed columns.
  EpochSummary row{2, 1.5, 1e-4, 1.25, 50.0, 80.0, 0, 0, 0};
  row.eval_loss_ema = 1.125;
  row.eval_top1_ema = 55.5;
  row.eval_top5_ema = 85.0;
  row.grad_norm = 0.75;
  row.images_per_s = 1234.5;
  update_summary_csv(path, row);
  EXPECT_NE(text().find("\n2,1.5,1.25,50,80,0.0001,0,0,0,1.125,55.5,85,0.75,1234.5\n"), std::string::npos) << text();
  // Lines that are not rows of ours (garbage, a negative or partly numeric epoch) are dropped.
  std::ofstream(path, std::ios::trunc) << header << "0,1,,,,0.1,0,,,,,,,\n-5,nan\n3abc,1\n \x01\xff\n 1,2\n";
  update_summary_csv(path, {1, 2.0, 2e-4, std::nullopt, std::nullopt, std::nullopt, 1});
  EXPECT_EQ(text(), header + "0,1,,,,0.1,0,,,,,,,\n1,2,,,,0.0002,1,,,,,,,\n");
}
