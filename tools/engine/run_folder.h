// run_folder.h: `train.output: auto`, timm's run folders: output/train/<YYYYmmdd>-<HHMMSS>-<model>-<img>
// relative to the working directory, with "-1", "-2", ... appended when that folder exists already
// (two runs started in the same second). With several ranks rank 0's clock and choice are used by all.
#pragma once
#include <cstdint>
#include <ctime>
#include <string>

#include "dist/process_group.h"

namespace mo::tools {

// "output/train/20260101-120000-mambaout_femto-224" for local time `t`; `index` > 0 appends "-<index>".
std::string run_folder_name(std::time_t t, const std::string& model, int64_t img_size, int64_t index = 0);
// The first of run_folder_name(t, ..., 0, 1, 2, ...) that does not exist, for now (rank 0's), created.
std::string make_auto_run_folder(const std::string& model, int64_t img_size, dist::ProcessGroup& pg);

}  // namespace mo::tools
