// loaders.cpp: TrainConfig -> data::LoaderConfig.
#include "tools/engine/loaders.h"

namespace mo::tools {
namespace {

data::Interp parse_interp(const std::string& s) {
  if (s == "bilinear") return data::Interp::bilinear;
  MO_CHECK(s == "bicubic", "interpolation '{}' is not bicubic or bilinear", s);
  return data::Interp::bicubic;
}

data::DecodeOn parse_decoder(const std::string& s) {
  if (s == "gpu") return data::DecodeOn::gpu;
  if (s == "auto") return data::DecodeOn::automatic;
  MO_CHECK(s == "cpu", "config key 'data.decoder': '{}' is not cpu, gpu or auto", s);
  return data::DecodeOn::cpu;
}

data::LoaderConfig common(const TrainConfig& c, int rank, int world, Device dev, DType dtype) {
  MO_CHECK(!c.data.root.empty(), "config key 'data.root' is empty: set it to the data set folder "
           "(e.g. --set data.root=/data/imagenet)");
  data::LoaderConfig l;
  l.root = c.data.root;
  l.num_threads = static_cast<int>(std::max<int64_t>(1, c.data.workers));
  l.worker_nice = static_cast<int>(c.data.worker_nice);
  l.prefetch_batches = static_cast<int>(c.data.prefetch);
  l.max_file_bytes = c.data.max_file_mb << 20;
  l.max_pixels = c.data.max_megapixels * 1000000;
  l.rank = rank;
  l.world_size = world;
  l.seed = static_cast<uint64_t>(c.train.seed);
  l.dtype = dtype;
  l.channels_last = true;
  l.use_cuda = dev.is_cuda();
  l.device = dev.index;
  return l;
}

}  // namespace

data::LoaderConfig train_loader_config(const TrainConfig& c, int rank, int world, Device dev, DType dtype) {
  data::LoaderConfig l = common(c, rank, world, dev, dtype);
  l.split = c.data.train_split;
  l.training = true;
  l.batch_size = static_cast<int>(c.train.batch_size);
  auto& t = l.train;
  t.size = static_cast<int>(c.data.img_size);
  t.scale_min = c.data.scale[0];
  t.scale_max = c.data.scale[1];
  t.ratio_min = c.data.ratio[0];
  t.ratio_max = c.data.ratio[1];
  if (c.data.train_interpolation != "random") t.interpolation = parse_interp(c.data.train_interpolation);
  t.hflip = c.data.hflip;
  t.auto_augment = c.data.auto_augment;
  l.mixup.mixup_alpha = c.data.mixup;
  l.mixup.cutmix_alpha = c.data.cutmix;
  l.mixup.prob = c.data.mixup_prob;
  l.mixup.switch_prob = c.data.mixup_switch_prob;
  l.mixup.label_smoothing = c.data.smoothing;
  l.erase.prob = c.data.reprob;
  l.decoder = parse_decoder(c.data.decoder);
  l.gpu_batches = static_cast<int>(c.data.gpu_batches);
  l.gpu_high_priority = c.data.gpu_priority == "high";
  l.synthetic = c.data.synthetic;
  return l;
}

data::LoaderConfig eval_loader_config(const TrainConfig& c, int rank, int world, Device dev, DType dtype) {
  data::LoaderConfig l = common(c, rank, world, dev, dtype);
  l.split = c.data.val_split;
  l.training = false;
  l.batch_size = static_cast<int>(c.train.eval_batch_size > 0 ? c.train.eval_batch_size : 2 * c.train.batch_size);
  l.eval.size = static_cast<int>(c.data.img_size);
  l.eval.crop_pct = c.data.crop_pct;
  l.eval.interpolation = parse_interp(c.data.interpolation);
  return l;
}

}  // namespace mo::tools
