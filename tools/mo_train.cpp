// mo_train: trains a MambaOut model from a YAML recipe.
//
//   mo_train RECIPE.yaml [--set key=value ...] [--print-config] [--help-config]
//
// RECIPE is one of recipes/*.yaml (femto, kobe, tiny, small, base: the official ImageNet recipe;
// fashion_mnist: a quick run on the prepared Fashion-MNIST folder). --set overrides one key (repeat it);
// --print-config prints every value in effect and exits; --help-config adds what each key means.
// Under mpirun each process is one rank (one GPU each); the global batch stays train.global_batch.
// SIGINT / SIGTERM: the current step finishes, a checkpoint is written, and the program exits 130;
// rerun with --set train.resume=auto to continue. If that takes longer than train.stop_timeout_s (a
// step or a read that never finishes), or on a second signal, it exits at once with 128 + the signal
// (tools/common/stop_signals.h). A NaN/Inf loss or gradient ends the run with exit 1, naming
// the step; nothing is saved from such weights. A fresh run (train.resume empty) refuses a train.output
// that already holds checkpoints, so another run's files are never overwritten or pruned.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "tools/common/omp_env.h"
#include "tools/common/stop_signals.h"
#include "tools/common/trainer.h"

namespace {

int usage(const char* msg) {
  std::fprintf(stderr,
               "%s%susage: mo_train RECIPE.yaml [--set key=value ...] [--print-config] [--help-config]\n",
               msg, *msg ? "\n" : "");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  mo::tools::ensure_passive_omp_wait(argc, argv);
  std::string recipe;
  std::vector<std::string> sets;
  bool print = false, help = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--set") {
      if (i + 1 >= argc) return usage("--set needs key=value");
      sets.push_back(argv[++i]);
    } else if (a.rfind("--set=", 0) == 0) {
      sets.push_back(a.substr(6));
    } else if (a == "--print-config") {
      print = true;
    } else if (a == "--help-config") {
      print = help = true;
    } else if (a == "-h" || a == "--help") {
      usage("");
      return 0;
    } else if (!a.empty() && a[0] == '-') {
      return usage(("unknown option " + a).c_str());
    } else if (recipe.empty()) {
      recipe = a;
    } else {
      return usage(("a second recipe " + a).c_str());
    }
  }
  if (recipe.empty() && !print) return usage("no recipe given");
  try {
    mo::tools::TrainConfig cfg = mo::tools::load_train_config(recipe, sets);
    if (print) {
      std::fputs(mo::tools::dump_train_config(cfg, help).c_str(), stdout);
      return 0;
    }
    mo::tools::Trainer trainer(cfg);  // a signal before this point ends the program (nothing to save yet)
    mo::tools::install_stop_signals("mo_train", cfg.train.stop_timeout_s, mo::tools::Trainer::request_stop);
    mo::tools::TrainResult r = trainer.fit();
    if (r.interrupted) mo::tools::stop_signals_saved();
    if (trainer.is_main()) {
      std::printf("done: %lld steps, %lld epochs in %.1f s", static_cast<long long>(r.global_step),
                  static_cast<long long>(r.epochs_done), r.train_seconds);
      if (r.last_eval)
        std::printf("; eval top-1 %.2f%% top-5 %.2f%% (best %.2f%%)", r.last_eval->top1_pct(),
                    r.last_eval->top5_pct(), r.best_top1);
      if (r.last_eval && r.last_eval->non_finite > 0)
        std::printf(", %lld images with NaN/Inf logits counted as wrong",
                    static_cast<long long>(r.last_eval->non_finite));
      std::printf("\n");
      if (!r.last_checkpoint.empty()) std::printf("checkpoint: %s\n", r.last_checkpoint.c_str());
    }
    if (r.interrupted && trainer.is_main())
      std::printf("interrupted: continue with --set train.resume=auto\n");
    return r.interrupted ? 130 : 0;
  } catch (const mo::Error& e) {
    std::fprintf(stderr, "mo_train: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {  // the standard library's (filesystem, allocation): same exit path
    std::fprintf(stderr, "mo_train: error: %s\n", e.what());
    return 1;
  }
}
