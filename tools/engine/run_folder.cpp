// run_folder.cpp: naming and creating automatic run folders.
#include "tools/engine/run_folder.h"

#include <filesystem>

#include "autograd/check.h"

namespace fs = std::filesystem;

namespace mo::tools {

std::string run_folder_name(std::time_t t, const std::string& model, int64_t img_size, int64_t index) {
  std::tm tm{};
  localtime_r(&t, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &tm);
  std::string name = fmt::format("output/train/{}-{}-{}", stamp, model, img_size);
  return index > 0 ? fmt::format("{}-{}", name, index) : name;
}

std::string make_auto_run_folder(const std::string& model, int64_t img_size, dist::ProcessGroup& pg) {
  // Rank 0 picks the time and the first free index; the others get them through one sum.
  std::vector<int64_t> pick = {0, 0};
  if (pg.is_main()) {
    pick[0] = static_cast<int64_t>(std::time(nullptr));
    for (int64_t i = 0;; ++i) {
      std::error_code ec;
      if (!fs::exists(run_folder_name(pick[0], model, img_size, i), ec)) {
        pick[1] = i;
        break;
      }
      MO_CHECK(i < 1000, "train.output=auto: {} and 1000 more like it exist already", run_folder_name(pick[0], model,
               img_size));
    }
  }
  if (pg.world_size() > 1) pick = pg.all_reduce_sum(pick);
  const std::string dir = run_folder_name(static_cast<std::time_t>(pick[0]), model, img_size, pick[1]);
  std::error_code ec;
  fs::create_directories(dir, ec);
  MO_CHECK(!ec, "train.output=auto: cannot create the run folder '{}': {}", dir, ec.message());
  return dir;
}

}  // namespace mo::tools
