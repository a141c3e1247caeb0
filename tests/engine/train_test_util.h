// train_test_util.h: a tiny synthetic ImageFolder (JPEGs written with data/jpeg.h) and a small CPU
// training config for the trainer tests; including it makes the test binary run OpenMP passively.
#pragma once
#include <filesystem>
#include <string>
#include <vector>

#include "data/jpeg.h"
#include "tools/common/omp_env.h"
#include "tools/engine/train_config.h"

namespace mo::tools::testing {

namespace fs = std::filesystem;

// libgomp reads OMP_WAIT_POLICY when the program loads: re-run the test binary with "passive" before main
// (tools/common/omp_env.h; with spinning OpenMP threads the trainer tests take 8x longer on 2 cores).
[[maybe_unused]] inline const bool kPassiveOmp = [] {
  ensure_passive_omp_wait(0, nullptr);
  return true;
}();

// root/{train,val}/class_<c>/<i>.jpg: `classes` classes, each image a class-coloured gradient with a
// per-image pattern, size x size. Returns root (recreated).
inline std::string make_image_folder(const std::string& name, int classes, int train_per_class, int val_per_class,
                                     int size = 32) {
  fs::path root = fs::temp_directory_path() / name;
  fs::remove_all(root);
  for (auto [split, count] : {std::pair<const char*, int>{"train", train_per_class}, {"val", val_per_class}}) {
    for (int c = 0; c < classes; ++c) {
      fs::path dir = root / split / ("class_" + std::to_string(c));
      fs::create_directories(dir);
      for (int i = 0; i < count; ++i) {
        std::vector<uint8_t> px(static_cast<size_t>(size) * size * 3);
        for (int y = 0; y < size; ++y)
          for (int x = 0; x < size; ++x)
            for (int ch = 0; ch < 3; ++ch) {
              int v = (ch == c % 3 ? 160 : 40) + ((x * (i + 1) + y * (c + 2) + 7 * ch) % 64);
              px[(static_cast<size_t>(y) * size + x) * 3 + ch] = static_cast<uint8_t>(v);
            }
        data::write_file((dir / (std::to_string(i) + ".jpg")).string(), data::encode_jpeg(px.data(), size, size, 3));
      }
    }
  }
  return root.string();
}

// test_mambaout (16/32/48/64 channels) on 32x32 images, CPU, fp32, quiet output. `clear`: empty the
// output folder first.
inline TrainConfig small_config(const std::string& root, const std::string& output, bool clear = true) {
  TrainConfig c;
  c.model.name = "test_mambaout";
  c.model.num_classes = 3;
  c.model.drop_path_rate = 0.1;
  c.data.root = root;
  c.data.img_size = 32;
  c.data.workers = 2;
  c.optim.lr = 1e-3;
  c.sched.epochs = 4;
  c.sched.warmup_epochs = 1;
  c.sched.cooldown_epochs = 1;
  c.sched.per_step = true;
  c.train.batch_size = 4;
  c.train.global_batch = 8;
  c.train.device = "cpu";
  c.train.precision = "fp32";
  c.train.output = output;
  c.log.progress = "lines";
  c.log.every_steps = 1000;
  if (clear) fs::remove_all(output);
  return c;
}

}  // namespace mo::tools::testing
