// test_train_schedule.cpp: the warmup + cosine + cooldown schedule against values of the reference
// formula (timm 0.6.11 CosineLRScheduler with the official arguments, mambaout.md §3).
#include <gtest/gtest.h>

#include <cmath>

#include "tools/engine/schedule.h"

using mo::tools::LrSchedule;

TEST(TrainSchedule, OfficialPerEpochValues) {
  LrSchedule s;  // defaults = the recipe
  EXPECT_EQ(s.total_epochs(), 310);
  EXPECT_DOUBLE_EQ(s.at(0), 1e-6);
  EXPECT_DOUBLE_EQ(s.at(10), 1e-6 + 10 * (4e-3 - 1e-6) / 20);
  EXPECT_DOUBLE_EQ(s.at(19), 1e-6 + 19 * (4e-3 - 1e-6) / 20);
  EXPECT_NEAR(s.at(20), 3.956e-3, 5e-7);  // never exactly 4e-3: no warmup offset in the cosine
  EXPECT_DOUBLE_EQ(s.at(150), 1e-5 + 0.5 * (4e-3 - 1e-5));
  EXPECT_DOUBLE_EQ(s.at(299), 1e-5 + 0.5 * (4e-3 - 1e-5) * (1 + std::cos(M_PI * 299 / 300)));
  EXPECT_DOUBLE_EQ(s.at(300), 1e-5);
  EXPECT_DOUBLE_EQ(s.at(309), 1e-5);
  // Per epoch: every step of an epoch gets the epoch's rate.
  EXPECT_DOUBLE_EQ(s.for_step(7, 0, 312), s.at(7));
  EXPECT_DOUBLE_EQ(s.for_step(7, 311, 312), s.at(7));
}

TEST(TrainSchedule, PerStepSamplesTheSameCurve) {
  LrSchedule s;
  s.per_step = true;
  EXPECT_DOUBLE_EQ(s.for_step(7, 0, 312), s.at(7));
  EXPECT_DOUBLE_EQ(s.for_step(7, 156, 312), s.at(7.5));
  EXPECT_GT(s.for_step(7, 156, 312), s.at(7));  // rising during warmup
  EXPECT_LT(s.for_step(100, 156, 312), s.at(100));  // falling during the cosine
}
