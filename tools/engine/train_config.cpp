// train_config.cpp: the key table of TrainConfig and the checks across keys.
#include "tools/engine/train_config.h"

#include <algorithm>

#include "autograd/check.h"
#include "tools/engine/recipe_path.h"

namespace mo::tools {

ConfigSchema make_schema(TrainConfig& c) {
  ConfigSchema s;
  s.add("model.name", &c.model.name, "mambaout_femto | _kobe | _tiny | _small | _base");
  s.add("model.drop_path_rate", &c.model.drop_path_rate, "stochastic depth, linear over the blocks");
  s.add("model.num_classes", &c.model.num_classes, "classifier outputs");
  s.add("model.attention", &c.model.attention, "ViT attention: full | causal (class token last)");
  s.add("model.init", &c.model.init, "weights to start from (ours, .pth or .safetensors); a classifier for another number of classes starts afresh");

  s.add("model_ema", &c.model_ema, "keep an EMA of the weights, evaluated beside them (timm --model-ema)");
  s.add("model_ema_decay", &c.model_ema_decay, "EMA decay per optimizer step, [0, 1] (timm --model-ema-decay)");
  s.add("model_ema_warmup", &c.model_ema_warmup,
        "decay min(decay, 1 - (1 + step)^-2/3) while it is lower (timm --model-ema-warmup)");

  s.add("data.root", &c.data.root, "data set folder holding <split>/<class>/*.jpg");
  s.add("data.train_split", &c.data.train_split, "sub-folder of root to train on");
  s.add("data.val_split", &c.data.val_split, "sub-folder of root to evaluate on");
  s.add("data.img_size", &c.data.img_size, "training and eval resolution");
  s.add("data.crop_pct", &c.data.crop_pct, "eval: resize shorter side to img_size / crop_pct");
  s.add("data.interpolation", &c.data.interpolation, "eval resize: bicubic | bilinear");
  s.add("data.train_interpolation", &c.data.train_interpolation, "random | bicubic | bilinear");
  s.add("data.scale", &c.data.scale, "RandomResizedCrop area range");
  s.add("data.ratio", &c.data.ratio, "RandomResizedCrop aspect range");
  s.add("data.hflip", &c.data.hflip, "horizontal flip probability");
  s.add("data.auto_augment", &c.data.auto_augment, "RandAugment policy ('' = off)");
  s.add("data.reprob", &c.data.reprob, "random erasing probability");
  s.add("data.remode", &c.data.remode, "random erasing fill: pixel (per-pixel N(0,1))");
  s.add("data.recount", &c.data.recount, "random erasing boxes");
  s.add("data.mixup", &c.data.mixup, "mixup alpha (0 = off)");
  s.add("data.cutmix", &c.data.cutmix, "cutmix alpha (0 = off)");
  s.add("data.mixup_prob", &c.data.mixup_prob, "probability of mixing a batch");
  s.add("data.mixup_switch_prob", &c.data.mixup_switch_prob, "probability of cutmix instead of mixup");
  s.add("data.mixup_mode", &c.data.mixup_mode, "batch (one lambda per batch)");
  s.add("data.smoothing", &c.data.smoothing, "label smoothing");
  s.add("data.workers", &c.data.workers, "decoding threads");
  s.add("data.worker_nice", &c.data.worker_nice,
        "added to the decoding threads' nice value, 0..19 (above 0 the training thread gets a busy core first)");
  s.add("data.decoder", &c.data.decoder,
        "training JPEGs decoded on: cpu (libjpeg-turbo) | gpu (nvJPEG) | auto (gpu where built with nvJPEG and on a GPU)");
  s.add("data.prefetch", &c.data.prefetch, "batches the loader prepares ahead (its ring of pinned slots), 2..64");
  s.add("data.gpu_priority", &c.data.gpu_priority,
        "decoder gpu: its CUDA streams at the highest priority (high) or the training step's (normal)");
  s.add("data.gpu_batches", &c.data.gpu_batches, "decoder gpu: batches decoding on the GPU at once, 1..8");
  s.add("data.synthetic", &c.data.synthetic,
        "training samples are random pixels, no file read (labels and epoch length from the folder): times "
        "training without the input pipeline");
  s.add("data.max_file_mb", &c.data.max_file_mb, "image files larger than this (MiB) are bad input, never read");
  s.add("data.max_megapixels", &c.data.max_megapixels, "JPEGs whose header declares more pixels are bad input");

  s.add("optim.name", &c.optim.name, "adamw");
  s.add("optim.lr", &c.optim.lr, "peak learning rate");
  s.add("optim.betas", &c.optim.betas, "AdamW betas");
  s.add("optim.eps", &c.optim.eps, "AdamW epsilon");
  s.add("optim.weight_decay", &c.optim.weight_decay, "decoupled; not on biases and norm weights");
  s.add("optim.clip_grad", &c.optim.clip_grad, "clip the global gradient norm to this, >= 0 (0: off; timm --clip-grad)");

  s.add("sched.epochs", &c.sched.epochs, "cosine length in epochs");
  s.add("sched.cooldown_epochs", &c.sched.cooldown_epochs, "epochs at min_lr after the cosine");
  s.add("sched.warmup_epochs", &c.sched.warmup_epochs, "linear warmup from warmup_lr");
  s.add("sched.warmup_lr", &c.sched.warmup_lr, "learning rate at t = 0");
  s.add("sched.min_lr", &c.sched.min_lr, "cosine floor and cooldown rate");
  s.add("sched.per_step", &c.sched.per_step, "update every optimizer step (false: per epoch, as the reference)");

  s.add("train.global_batch", &c.train.global_batch, "images per optimizer step, all ranks");
  s.add("train.batch_size", &c.train.batch_size, "images per micro-batch per GPU");
  s.add("train.precision", &c.train.precision, "bf16 | fp32 (the CPU always runs fp32)");
  s.add("train.device", &c.train.device, "auto | cpu | cuda");
  s.add("train.run_ahead", &c.train.run_ahead,
        "GPU: optimizer steps the host may queue ahead of the GPU, 0..64 (0: no bound)");
  s.add("train.seed", &c.train.seed, "seed of every random draw");
  s.add("train.steps_per_epoch", &c.train.steps_per_epoch, "0: batches / accumulation");
  s.add("train.max_steps", &c.train.max_steps, "stop after this many optimizer steps (0: full schedule)");
  s.add("train.eval_every", &c.train.eval_every, "epochs between evaluations (0: never)");
  s.add("train.eval_batch_size", &c.train.eval_batch_size, "0: 2 x batch_size");
  s.add("train.output", &c.train.output,
        "directory for checkpoints and logs; auto: output/train/<date>-<time>-<model>-<img> (a new one per run)");
  s.add("train.resume", &c.train.resume, "'' | auto | path of a checkpoint");
  s.add("train.stop_timeout_s", &c.train.stop_timeout_s,
        "after SIGINT/SIGTERM: seconds to finish the step and save, then exit anyway");

  s.add("ckpt.keep_last", &c.ckpt.keep_last, "checkpoints kept (besides the best)");
  s.add("ckpt.keep_best", &c.ckpt.keep_best, "keep the checkpoint with the best eval top-1");
  s.add("ckpt.every_steps", &c.ckpt.every_steps, "also save every N optimizer steps (0: per epoch)");

  s.add("ddp.bucket_mb", &c.ddp.bucket_mb,
        "with several ranks: gradients are all-reduced in buckets of this many MiB (the first at most 1 MiB)");

  s.add("log.every_steps", &c.log.every_steps, "steps between log lines and scalars");
  s.add("log.tensorboard", &c.log.tensorboard, "write TensorBoard event files to output/tb");
  s.add("log.progress", &c.log.progress, "auto | bar | lines");
  return s;
}

LrSchedule TrainConfig::lr_schedule() const {
  LrSchedule s;
  s.lr = optim.lr;
  s.warmup_lr = sched.warmup_lr;
  s.min_lr = sched.min_lr;
  s.warmup_epochs = sched.warmup_epochs;
  s.epochs = sched.epochs;
  s.cooldown_epochs = sched.cooldown_epochs;
  s.per_step = sched.per_step;
  return s;
}

namespace {
void check_choice(const std::string& key, const std::string& v, std::initializer_list<const char*> choices) {
  for (const char* c : choices)
    if (v == c) return;
  std::string list;
  for (const char* c : choices) list += (list.empty() ? "" : ", ") + std::string(c);
  const std::string near = nearest_choice(v, std::vector<std::string>(choices.begin(), choices.end()));
  MO_FAIL("config key '{}': '{}' is not one of {}{}", key, v, list,
          near.empty() ? "" : fmt::format("; did you mean '{}'?", near));
}
}  // namespace

void TrainConfig::validate() const {
  MO_CHECK(model.drop_path_rate >= 0 && model.drop_path_rate < 1, "config key 'model.drop_path_rate': {} not in [0, 1)",
           model.drop_path_rate);
  MO_CHECK(model.num_classes > 0, "config key 'model.num_classes' must be positive, got {}", model.num_classes);
  MO_CHECK(model.attention == "full" || model.attention == "causal",
           "config key 'model.attention': '{}' is not full or causal", model.attention);
  MO_CHECK(data.img_size >= 32 && data.img_size <= 8192, "config key 'data.img_size' must be in [32, 8192], got {}",
           data.img_size);
  MO_CHECK(data.crop_pct > 0 && data.crop_pct <= 1, "config key 'data.crop_pct': {} not in (0, 1]", data.crop_pct);
  MO_CHECK(data.scale.size() == 2 && data.scale[0] > 0 && data.scale[0] <= data.scale[1],
           "config key 'data.scale' must be [lo, hi] with 0 < lo <= hi");
  MO_CHECK(data.ratio.size() == 2 && data.ratio[0] > 0 && data.ratio[0] <= data.ratio[1],
           "config key 'data.ratio' must be [lo, hi] with 0 < lo <= hi");
  MO_CHECK(data.smoothing >= 0 && data.smoothing < 1, "config key 'data.smoothing': {} not in [0, 1)", data.smoothing);
  for (auto [key, p] : {std::pair<const char*, double>{"data.hflip", data.hflip}, {"data.reprob", data.reprob},
                        {"data.mixup_prob", data.mixup_prob}, {"data.mixup_switch_prob", data.mixup_switch_prob}})
    MO_CHECK(p >= 0 && p <= 1, "config key '{}' is a probability: {} not in [0, 1]", key, p);
  MO_CHECK(data.mixup >= 0 && data.cutmix >= 0, "config keys 'data.mixup' ({}) and 'data.cutmix' ({}) are Beta "
           "distribution alphas: must be >= 0 (0 = off)", data.mixup, data.cutmix);
  MO_CHECK(data.workers >= 0, "config key 'data.workers' must be >= 0, got {}", data.workers);
  MO_CHECK(data.workers <= 4096, "config key 'data.workers' must be at most 4096, got {}", data.workers);
  MO_CHECK(data.worker_nice >= 0 && data.worker_nice <= 19, "config key 'data.worker_nice' must be in [0, 19], got {}",
           data.worker_nice);
  MO_CHECK(data.max_file_mb >= 1 && data.max_file_mb <= (int64_t(1) << 20),
           "config key 'data.max_file_mb' must be in [1, 1048576], got {}", data.max_file_mb);
  MO_CHECK(data.max_megapixels >= 1 && data.max_megapixels <= 4290,
           "config key 'data.max_megapixels' must be in [1, 4290] (JPEG's largest is 65500 x 65500), got {}",
           data.max_megapixels);
  check_choice("data.interpolation", data.interpolation, {"bicubic", "bilinear"});
  check_choice("data.train_interpolation", data.train_interpolation, {"random", "bicubic", "bilinear"});
  check_choice("data.decoder", data.decoder, {"cpu", "gpu", "auto"});
  check_choice("data.gpu_priority", data.gpu_priority, {"high", "normal"});
  MO_CHECK(data.prefetch >= 2 && data.prefetch <= 64, "config key 'data.prefetch' must be in [2, 64], got {}",
           data.prefetch);
  MO_CHECK(data.gpu_batches >= 1 && data.gpu_batches <= 8, "config key 'data.gpu_batches' must be in [1, 8], got {}",
           data.gpu_batches);
  // The loader implements the recipe's variants only (data/mixup.h, data/normalize.h).
  check_choice("data.mixup_mode", data.mixup_mode, {"batch"});
  check_choice("data.remode", data.remode, {"pixel"});
  MO_CHECK(data.recount == 1, "config key 'data.recount': only 1 erasing box is implemented, got {}", data.recount);
  check_choice("optim.name", optim.name, {"adamw"});
  MO_CHECK(optim.lr > 0, "config key 'optim.lr' must be positive, got {}", optim.lr);
  MO_CHECK(optim.betas.size() == 2, "config key 'optim.betas' needs 2 values, got {}", optim.betas.size());
  MO_CHECK(optim.betas[0] >= 0 && optim.betas[0] < 1 && optim.betas[1] >= 0 && optim.betas[1] < 1,
           "config key 'optim.betas': [{}, {}] must both be in [0, 1)", optim.betas[0], optim.betas[1]);
  MO_CHECK(optim.eps > 0, "config key 'optim.eps' must be > 0 (with 0, a weight whose gradients are all 0 "
           "becomes 0/0 = NaN), got {}", optim.eps);
  MO_CHECK(optim.weight_decay >= 0, "config key 'optim.weight_decay' must be >= 0");
  MO_CHECK(optim.clip_grad >= 0 && optim.clip_grad <= 1e30, "config key 'optim.clip_grad' must be in [0, 1e30] (0: no "
           "clipping), got {}", optim.clip_grad);
  MO_CHECK(model_ema_decay >= 0 && model_ema_decay <= 1, "config key 'model_ema_decay' must be in [0, 1], got {}",
           model_ema_decay);
  MO_CHECK(sched.warmup_lr >= 0 && sched.min_lr >= 0, "config keys 'sched.warmup_lr' ({}) and 'sched.min_lr' ({}) "
           "must be >= 0", sched.warmup_lr, sched.min_lr);
  MO_CHECK(sched.epochs > 0 && sched.warmup_epochs >= 0 && sched.cooldown_epochs >= 0,
           "config keys 'sched.epochs' (> 0), 'sched.warmup_epochs' and 'sched.cooldown_epochs' (>= 0)");
  MO_CHECK(sched.warmup_epochs <= sched.epochs, "config key 'sched.warmup_epochs' ({}) exceeds 'sched.epochs' ({})",
           sched.warmup_epochs, sched.epochs);
  MO_CHECK(sched.epochs + sched.cooldown_epochs <= 1e6, "config keys 'sched.epochs' ({}) + 'sched.cooldown_epochs' "
           "({}) must be at most 1e6 epochs", sched.epochs, sched.cooldown_epochs);
  MO_CHECK(train.batch_size > 0 && train.global_batch > 0, "config keys 'train.batch_size' and 'train.global_batch' "
           "must be positive");
  for (auto [key, b] : {std::pair<const char*, int64_t>{"train.batch_size", train.batch_size},
                        {"train.global_batch", train.global_batch}, {"train.eval_batch_size", train.eval_batch_size}})
    MO_CHECK(b <= (int64_t(1) << 20), "config key '{}' must be at most 1048576 images, got {}", key, b);
  check_choice("train.precision", train.precision, {"bf16", "fp32"});
  check_choice("train.device", train.device, {"auto", "cpu", "cuda"});
  MO_CHECK(train.run_ahead >= 0 && train.run_ahead <= 64, "config key 'train.run_ahead' must be in [0, 64], got {}",
           train.run_ahead);
  MO_CHECK(train.max_steps >= 0 && train.steps_per_epoch >= 0 && train.eval_every >= 0,
           "config keys 'train.max_steps', 'train.steps_per_epoch', 'train.eval_every' must be >= 0");
  MO_CHECK(train.eval_batch_size >= 0, "config key 'train.eval_batch_size' must be >= 0 (0: 2 x batch_size), got {}",
           train.eval_batch_size);
  MO_CHECK(!train.output.empty(), "config key 'train.output' must name a directory");
  MO_CHECK(!(train.output == "auto" && train.resume == "auto"), "config keys 'train.output' and 'train.resume' are "
           "both 'auto': an automatic output folder is new for every run, so there is nothing to resume in it; set "
           "train.output to the run's folder (e.g. output/train/20260101-120000-mambaout_femto-224)");
  MO_CHECK(train.stop_timeout_s > 0 && train.stop_timeout_s <= 86400, "config key 'train.stop_timeout_s' must be "
           "in (0, 86400] seconds, got {}", train.stop_timeout_s);
  MO_CHECK(ckpt.keep_last >= 1, "config key 'ckpt.keep_last' must be >= 1, got {}", ckpt.keep_last);
  MO_CHECK(ckpt.every_steps >= 0, "config key 'ckpt.every_steps' must be >= 0 (0: per epoch), got {}",
           ckpt.every_steps);
  MO_CHECK(ddp.bucket_mb > 0 && ddp.bucket_mb <= 4096, "config key 'ddp.bucket_mb' must be in (0, 4096] MiB, got {}",
           ddp.bucket_mb);
  MO_CHECK(log.every_steps >= 1, "config key 'log.every_steps' must be >= 1");
  check_choice("log.progress", log.progress, {"auto", "bar", "lines"});
}

TrainConfig load_train_config(const std::string& recipe, const std::vector<std::string>& sets) {
  TrainConfig c;
  ConfigSchema s = make_schema(c);
  if (!recipe.empty()) s.load_file(find_recipe(recipe));
  for (auto& a : sets) s.set(a);
  c.validate();
  return c;
}

std::string dump_train_config(TrainConfig& c, bool with_help) { return make_schema(c).dump(with_help); }

}  // namespace mo::tools
