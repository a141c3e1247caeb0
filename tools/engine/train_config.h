// train_config.h: every setting of a training run, with the official MambaOut ImageNet recipe
// (mambaout.md §3) as the defaults. recipes/*.yaml set them by section ("optim.lr: 4e-3"); mo_train
// --set key=value overrides one; --print-config prints them all.
#pragma once
#include <string>
#include <vector>

#include "tools/engine/config_schema.h"
#include "tools/engine/schedule.h"

namespace mo::tools {

struct TrainConfig {
  struct Model {
    std::string name = "mambaout_tiny";
    double drop_path_rate = 0.0;
    std::string attention = "full";  // ViT: full | causal (token t attends to tokens <= t)
    int64_t num_classes = 1000;
    std::string init;  // weights to start from (our checkpoint or a PyTorch .pth/.safetensors)
  } model;
  // Model EMA (timm's ModelEmaV3: --model-ema, --model-ema-decay, --model-ema-warmup).
  bool model_ema = false;
  double model_ema_decay = 0.9998;
  bool model_ema_warmup = false;
  struct Data {
    std::string root;  // an ImageFolder root: root/<split>/<class>/*.jpg
    std::string train_split = "train", val_split = "val";
    int64_t img_size = 224;
    double crop_pct = 1.0;
    std::string interpolation = "bicubic";  // eval resize
    std::string train_interpolation = "random";
    std::vector<double> scale = {0.08, 1.0};
    std::vector<double> ratio = {3.0 / 4.0, 4.0 / 3.0};
    double hflip = 0.5;
    std::string auto_augment = "rand-m9-mstd0.5-inc1";
    double reprob = 0.25;
    std::string remode = "pixel";
    int64_t recount = 1;
    double mixup = 0.8, cutmix = 1.0, mixup_prob = 1.0, mixup_switch_prob = 0.5;
    std::string mixup_mode = "batch";
    double smoothing = 0.1;
    int64_t workers = 8;
    int64_t worker_nice = 0;  // added to the decoding threads' nice value (0..19)
    std::string decoder = "cpu";  // cpu | gpu | auto (data/loader.h DecodeOn)
    int64_t prefetch = 4;         // batch slots in the loader's ring (2..64)
    std::string gpu_priority = "high";  // decoder gpu: its CUDA streams' priority, high | normal
    int64_t gpu_batches = 2;      // decoder gpu: batches decoding on the GPU at once (1..8)
    bool synthetic = false;       // training samples are noise, no file read (LoaderConfig::synthetic)
    int64_t max_file_mb = 64;     // larger image files are bad input, never read
    int64_t max_megapixels = 64;  // JPEGs whose header declares more are bad input
  } data;
  struct Optim {
    std::string name = "adamw";
    double lr = 4e-3;
    std::vector<double> betas = {0.9, 0.999};
    double eps = 1e-8;
    double weight_decay = 0.05;
    double clip_grad = 0;  // max global gradient norm (timm --clip-grad, mode norm); 0: no clipping
  } optim;
  struct Sched {
    double epochs = 300, cooldown_epochs = 10, warmup_epochs = 20;
    double warmup_lr = 1e-6, min_lr = 1e-5;
    bool per_step = false;
  } sched;
  struct Train {
    int64_t global_batch = 4096;
    int64_t batch_size = 128;       // per GPU (micro-batch); accumulation = global / (world * batch_size)
    std::string precision = "bf16";  // bf16 | fp32 (bf16 needs a GPU; the CPU runs fp32)
    std::string device = "auto";     // auto | cpu | cuda
    int64_t run_ahead = 0;           // optimizer steps the host may queue ahead of the GPU (0: no bound)
    int64_t seed = 42;
    int64_t steps_per_epoch = 0;  // 0: floor(batches per epoch / accumulation), as the reference
    int64_t max_steps = 0;        // 0: the whole schedule; else stop after this many optimizer steps
    int64_t eval_every = 1;       // epochs between evaluations (0: never)
    int64_t eval_batch_size = 0;  // 0: 2 x batch_size
    std::string output = "output/run";  // "auto": output/train/<YYYYmmdd>-<HHMMSS>-<model>-<img> (timm's)
    std::string resume;  // "" | "auto" (latest in output) | a checkpoint path
    double stop_timeout_s = 60;  // after SIGINT/SIGTERM: time to finish the step and save before exiting
  } train;
  struct Ckpt {
    int64_t keep_last = 10;
    bool keep_best = true;
    int64_t every_steps = 0;  // 0: at the end of each epoch only
  } ckpt;
  struct Ddp {
    double bucket_mb = 25;  // gradient all-reduce bucket size (MiB), as PyTorch DDP's bucket_cap_mb
  } ddp;
  struct Log {
    int64_t every_steps = 50;  // plain-line / TensorBoard scalar interval
    bool tensorboard = true;
    std::string progress = "auto";  // auto | bar | lines
  } log;

  LrSchedule lr_schedule() const;
  // Checks values that no single key can check (ranges, choices); throws naming the key.
  void validate() const;
};

// The schema binding every field of `c` to its dotted key.
ConfigSchema make_schema(TrainConfig& c);

// Loads `recipe` (may be ""), applies `sets` in order, validates. The YAML text of the result is
// what --print-config shows and what checkpoints store.
TrainConfig load_train_config(const std::string& recipe, const std::vector<std::string>& sets);
std::string dump_train_config(TrainConfig& c, bool with_help = false);

}  // namespace mo::tools
