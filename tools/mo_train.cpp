// mo_train: trains a MambaOut model from a YAML recipe.
//
//   mo_train RECIPE.yaml [--set key=value ...] [-b N] [-j N] [-m NAME] [--amp] [--img-size N] [--crop-pct F]
//            [--interpolation bicubic|bilinear] [--print-config] [--help-config]
//
// RECIPE is one of recipes/*.yaml (femto, kobe, tiny, small, base: the official ImageNet recipe;
// fashion_mnist: a quick run on the prepared Fashion-MNIST folder), or just its name: `mo_train femto`
// finds it among the installed recipes (tools/engine/recipe_path.h). --set overrides one key (repeat it);
// timm's train.py flags of the same meaning (-b, -j, -m, --amp, ...) are each the --set of one key.
// --print-config prints every value in effect and exits; --help-config adds what each key means.
// Under mpirun each process is one rank (one GPU each); the global batch stays train.global_batch.
// SIGINT / SIGTERM: the current step finishes, a checkpoint is written, and the program exits 130;
// rerun with --set train.resume=auto to continue. If that takes longer than train.stop_timeout_s (a
// step or a read that never finishes), or on a second signal, it exits at once with 128 + the signal
// (tools/common/stop_signals.h). A NaN/Inf loss or gradient ends the run with exit 1, naming
// the step; nothing is saved from such weights. A fresh run (train.resume empty) refuses a train.output
// that already holds checkpoints, so another run's files are never overwritten or pruned.
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "tools/common/cli.h"
#include "tools/common/omp_env.h"
#include "tools/common/stop_signals.h"
#include "tools/engine/trainer.h"

namespace {

using mo::tools::int_range;
using mo::tools::number_range;
using mo::tools::one_of;

// timm's train.py flags with the same meaning, each the --set of one recipe key.
struct Alias {
  const char* flags;
  const char* key;
  const char* type;
  const char* help;
  CLI::Validator check;
  std::string value;  // as given; "" when absent
};

}  // namespace

int main(int argc, char** argv) {
  mo::tools::ensure_passive_omp_wait(argc, argv);
  mo::tools::Cli cli("mo_train", "Trains a MambaOut model from a YAML recipe (recipes/*.yaml).");
  std::string recipe;
  std::vector<std::string> sets;
  bool print = false, help = false, amp = false;
  CLI::App& app = cli.app;
  app.add_option("RECIPE", recipe, "the recipe file, e.g. recipes/fashion_mnist.yaml, or a shipped recipe's name (femto, tiny, ...)")->type_name("FILE");
  app.add_option("--set", sets, "override one recipe key, e.g. --set optim.lr=1e-3; repeat --set for more")
      ->option_text("KEY=VALUE")
      ->allow_extra_args(false);
  app.add_flag("--print-config", print, "print every recipe value in effect and exit");
  app.add_flag("--help-config", help, "the same with what each key means");
  std::vector<Alias> aliases = {
      {"-b,--batch-size", "train.batch_size", "INT", "images per micro-batch per GPU", int_range(1)},
      {"-j,--workers", "data.workers", "INT", "decoding threads", int_range(0, 4096)},
      {"-m,--model", "model.name", "NAME", "model name, e.g. mambaout_femto", {}},
      {"--img-size", "data.img_size", "INT", "training and evaluation resolution", int_range(32, 8192)},
      {"--crop-pct", "data.crop_pct", "FLOAT", "evaluation crop fraction", number_range(1e-3, 1.0)},
      {"--interpolation", "data.interpolation", "NAME", "evaluation resize", one_of({"bicubic", "bilinear"})},
  };
  for (Alias& a : aliases)  // `aliases` is not resized below: the options keep pointing at its values
    app.add_option(a.flags, a.value, fmt::format("{} (= --set {}=...)", a.help, a.key))->type_name(a.type)->check(a.check);
  app.add_flag("--amp", amp, "bf16 mixed precision (= --set train.precision=bf16)");
  app.footer(
      "The options -b, -j, -m, --amp, --img-size, --crop-pct and --interpolation (timm's names) override the\n"
      "recipe as the --set they name; giving one together with a --set of the same key is a mistake.\n"
      "Under mpirun each process is one rank (one GPU each). SIGINT/SIGTERM: the step finishes, a checkpoint\n"
      "is written and the program exits 130; continue with --set train.resume=auto.\n" + app.get_footer());
  if (auto rc = cli.parse(argc, argv)) return *rc;
  print = print || help;
  // The aliases become --set assignments ahead of the explicit ones; the same key in both is ambiguous.
  std::vector<std::pair<std::string, std::string>> given;  // (option, key=value)
  for (const Alias& a : aliases)
    if (!a.value.empty()) given.emplace_back(a.flags, std::string(a.key) + "=" + a.value);
  if (amp) given.emplace_back("--amp", "train.precision=bf16");
  std::vector<std::string> all;
  for (const auto& [flag, set] : given) all.push_back(set);
  for (const std::string& s : sets) {
    const std::string key = s.substr(0, s.find('='));
    for (const auto& [flag, set] : given)
      if (set.rfind(key + "=", 0) == 0) {
        cli.print_error(fmt::format("{} and --set {} both set '{}': keep one", flag, s, key));
        std::fprintf(stderr, "(mo_train --help lists the options)\n");
        return 2;
      }
  }
  all.insert(all.end(), sets.begin(), sets.end());
  if (recipe.empty() && !print) {
    cli.print_error("no recipe given");
    std::fprintf(stderr, "(mo_train --help lists the options)\n");
    return 2;
  }
  return cli.run([&] {
    mo::tools::TrainConfig cfg = mo::tools::load_train_config(recipe, all);
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
  });
}
