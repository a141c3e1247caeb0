// test_train_vit.cpp: mo_train's engine on a ViT (vit_tiny_patch4_32 on 32×32 images, CPU, fp32, a few
// steps): it trains and checkpoints in causal mode, and resuming that run with the other attention mode
// is refused naming the key.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "nn/vit.h"
#include "tests/test_util.h"
#include "tests/engine/train_test_util.h"
#include "tools/engine/trainer.h"

using namespace mo;
using namespace mo::tools;
using namespace mo::tools::testing;

TEST(TrainVit, CausalRunTrainsAndResumesOnlyInItsMode) {
  const std::string root = make_image_folder("mo_train_vit_data", 3, 4, 2);
  TrainConfig c = small_config(root, mo::test::tmp_path("mo_train_vit"));
  c.model.name = "vit_tiny_patch4_32";
  c.model.attention = "causal";
  c.train.max_steps = 2;
  c.train.eval_every = 0;
  std::FILE* log = std::tmpfile();
  {
    Trainer t(c, nullptr, log);
    const TrainResult r = t.fit();
    EXPECT_EQ(r.global_step, 2);
    EXPECT_NE(dynamic_cast<nn::VisionTransformer*>(&t.model()), nullptr);
    EXPECT_TRUE(std::isfinite(r.last_train_loss) || r.epochs_done == 0);
  }
  TrainConfig again = c;
  again.train.max_steps = 3;
  again.train.resume = "auto";
  again.model.attention = "full";
  const std::string e = mo::test::error_of([&] { Trainer t(again, nullptr, log); });
  EXPECT_NE(e.find("was trained with model.attention causal but the config says full"), std::string::npos) << e;
  again.model.attention = "causal";  // the same mode resumes
  Trainer t(again, nullptr, log);
  EXPECT_EQ(t.fit().global_step, 3);
  std::fclose(log);
}
