// checkpoint.h: our checkpoint files (manifest in checkpoint.proto + tensor payloads with CRC32C) and
// the manager that keeps the last K and the best of them in a run directory.
// Writing is atomic: a temporary file in the same directory, fsync, rename, fsync of the directory; a
// crash leaves either the old set of files or the new one, plus the temporary, which carries the
// writer's host and pid (temp_file_name) so that a later run can tell it is stale and remove it.
// Reading verifies the magic, the manifest CRC, the file size, every payload CRC, and that counters,
// shapes and byte ranges are in range, and names the file (and the field) in any error.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "autograd/tensor.h"

namespace mo::tools {

struct RngSnapshot {
  std::string name;
  uint64_t seed = 0, stream = 0, counter = 0;
};

struct CheckpointState {
  std::string config_yaml, model_name;
  int64_t epoch = 0, step = 0, step_in_epoch = 0;
  std::vector<std::pair<std::string, Tensor>> model;      // any device; loaded back on the CPU
  std::vector<std::pair<std::string, Tensor>> optimizer;
  int64_t optimizer_step = 0;
  std::vector<RngSnapshot> rng;
  int64_t sampler_epoch = 0, sampler_batches_done = 0;
  uint64_t sampler_seed = 0;
  int32_t world_size = 1;
  std::optional<double> metric;
  double best_metric = -1.0;
  int64_t best_epoch = -1;
  std::vector<std::string> class_names;
  std::vector<std::pair<std::string, Tensor>> ema;  // model EMA weights (empty without model_ema)
  // The epoch so far (mid-epoch checkpoints): micro-batch loss sum (mean over ranks) and count; step
  // gradient norm sum and count.
  double epoch_loss_sum = 0, epoch_grad_norm_sum = 0;
  int64_t epoch_loss_count = 0, epoch_grad_norm_count = 0;
};

// The weights a training checkpoint holds under `entry`: "" / "state_dict" / "model" the model's,
// "state_dict_ema" / "ema" the EMA's (as timm names them). Throws naming `path` and the entries there are.
const std::vector<std::pair<std::string, Tensor>>& checkpoint_entry(const CheckpointState& s, const std::string& entry,
                                                                    const std::string& path);

// Write `s` to `path` atomically. Throws naming the path on any I/O failure.
void save_checkpoint(const std::string& path, const CheckpointState& s);
// Read and verify a checkpoint; tensors come back on the CPU. Throws naming the file when it is not a
// mo checkpoint, is truncated, or a checksum does not match. `with_optimizer` false skips the
// optimizer tensors (weights only, for evaluation), `with_ema` false the EMA's.
CheckpointState load_checkpoint(const std::string& path, bool with_optimizer = true, bool with_ema = true);
// Only the manifest fields (no tensors read, payload CRCs not checked): for listing.
CheckpointState read_checkpoint_header(const std::string& path);
bool is_mo_checkpoint(const std::string& path);  // a regular file that starts with the magic

// "<path>.tmp.<host>.<pid>": the temporary that this process writes before renaming it to `path`.
std::string temp_file_name(const std::string& path);
// Removes the temporaries of interrupted writes in `dir` (not recursive): files named like
// temp_file_name() of this host whose process is gone (kill(pid, 0) fails with ESRCH), and the older
// forms "<name>.tmp.<pid>" (same test) and "<name>.tmp", for names a run writes (ckpt-*.mo, best.mo,
// last.mo (a link), summary.csv, config.yaml, curves.svg). Returns "<path> (<bytes> bytes)" for each one
// removed. Those of live processes and of other hosts stay.
std::vector<std::string> remove_stale_temp_files(const std::string& dir);

// A run directory's checkpoints: ckpt-e<epoch>-s<step>.mo, plus best.mo (a hard link or copy) and last.mo
// (a symbolic link to the newest, replaced atomically; a copy where the file system has no links).
class CheckpointManager {
 public:
  CheckpointManager(std::string dir, int64_t keep_last, bool keep_best);

  // Save; when `is_best` (and keep_best) also make best.mo this checkpoint; point last.mo at it; then
  // delete all but the newest keep_last. Returns the path written.
  std::string save(const CheckpointState& s, bool is_best);
  // Checkpoint paths, oldest first (by step, then epoch).
  std::vector<std::string> list() const;
  // Load the newest checkpoint that verifies; each one refused is reported in `warnings` (the caller
  // prints them) and the previous one is tried. nullopt when there is none.
  std::optional<CheckpointState> load_latest(std::vector<std::string>& warnings, std::string* path = nullptr) const;
  const std::string& dir() const { return dir_; }
  std::string best_path() const { return dir_ + "/best.mo"; }
  std::string last_path() const { return dir_ + "/last.mo"; }

 private:
  void update_last_link(const std::string& path) const;
  std::string dir_;
  int64_t keep_last_;
  bool keep_best_;
};

}  // namespace mo::tools
