// loaders.h: the data loaders of a run, configured from the recipe's data section (mambaout.md §3-4):
// training (RandomResizedCrop, flip, RandAugment, mixup/cutmix with label smoothing, random erasing;
// sharded over the ranks) and evaluation (resize shorter side, centre crop). Both return channels-last
// batches on `dev` in `dtype`.
#pragma once
#include <memory>

#include "data/loader.h"
#include "tools/engine/train_config.h"

namespace mo::tools {

data::LoaderConfig train_loader_config(const TrainConfig& c, int rank, int world, Device dev, DType dtype);
data::LoaderConfig eval_loader_config(const TrainConfig& c, int rank, int world, Device dev, DType dtype);

}  // namespace mo::tools
