// mo_validate: top-1 / top-5 accuracy and mean cross-entropy of a model on an ImageFolder split with
// the evaluation transform (mambaout.md §4: shorter side to size / crop_pct, PIL bicubic, centre crop).
//
//   mo_validate WEIGHTS --data ROOT [--split val] [-m NAME] [--use-ema] [--img-size N] [--crop-pct F]
//               [--interpolation bicubic|bilinear] [-b N] [-j N] [--precision fp32|bf16] [--amp]
//               [--device auto|cpu|cuda] [--results-file FILE.csv|FILE.json]
//
// WEIGHTS: one of our checkpoints (.mo; the model, size and crop come from its stored config) or a
// PyTorch file (.pth/.safetensors, official or timm names; --model names the variant unless the file
// does); --use-ema takes a checkpoint's EMA weights. The command line is tools/common/cli.h's, with
// timm validate.py's names (-b, -j, -m, --amp, --use-ema, ...). Under mpirun the split is shared among the ranks and the counts are summed exactly.
// Exit 1 after printing the numbers when an image was unreadable (a stand-in was counted) or the
// model gave NaN/Inf logits (those images count as wrong).
// --results-file writes timm validate.py's fields (model, top1, top1_err, top5, top5_err, param_count in
// millions, img_size, crop_pct, interpolation) as CSV (a header and one row) or JSON (one object), by the
// extension, and only when the run succeeds. A progress line goes to stderr every few seconds.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "autograd/cuda_allocator.h"
#include "dist/process_group.h"
#include "tools/common/cli.h"
#include "tools/engine/evaluate.h"
#include "tools/common/inference.h"
#include "tools/engine/loaders.h"
#include "tools/common/omp_env.h"
#include "tools/common/result_writer.h"

using namespace mo;

int main(int argc, char** argv) {
  mo::tools::ensure_passive_omp_wait(argc, argv);
  std::string weights, root, split = "val", model, precision = "fp32", device = "auto", interp, results_file;
  int64_t img_size = 0, batch = 128, workers = 8;
  double crop_pct = 0;
  bool amp = false, use_ema = false;
  tools::Cli cli("mo_validate", "Top-1 / top-5 accuracy and mean cross-entropy of a model on an ImageFolder split, "
                                "with the evaluation transform.");
  CLI::App& app = cli.app;
  app.add_option("WEIGHTS", weights, "checkpoint (ours, .pth, .safetensors or a --hf-dir folder)")
      ->type_name("FILE")->required();
  app.add_option("--data", root, "the ImageFolder root (ROOT/SPLIT/<class>/*.jpg)")->type_name("ROOT")->required();
  app.add_option("--split", split, "the folder under ROOT to evaluate")->capture_default_str();
  app.add_option("-m,--model", model, "model name where the file does not say (e.g. mambaout_femto, "
                 "vit_tiny_patch16_224)")->type_name("NAME");
  app.add_flag("--use-ema", use_ema, "the checkpoint's EMA weights (state_dict_ema) instead of the model's");
  app.add_option("--img-size", img_size, "input size (default: the checkpoint's)")->check(tools::int_range(32, 8192));
  app.add_option("--crop-pct", crop_pct, "centre-crop fraction (default: the checkpoint's)")
      ->check(tools::number_range(1e-3, 1.0));
  app.add_option("--interpolation", interp, "resize (default: the checkpoint's)")
      ->type_name("NAME")
      ->check(tools::one_of({"bicubic", "bilinear"}));
  app.add_option("-b,--batch-size", batch, "images per batch (per rank)")->capture_default_str()
      ->check(tools::int_range(1, 1 << 20));
  app.add_option("-j,--workers", workers, "decoding threads")->capture_default_str()->check(tools::int_range(0, 4096));
  CLI::Option* prec = app.add_option("--precision", precision, "weights and activations")
      ->type_name("NAME")
      ->capture_default_str()
      ->check(tools::one_of({"fp32", "bf16"}));
  app.add_flag("--amp", amp, "the same as --precision bf16 (timm's name)")->excludes(prec);
  app.add_option("--device", device, "where to run")->capture_default_str()->check(tools::one_of({"auto", "cpu", "cuda"}));
  app.add_option("--results-file", results_file, "timm validate.py's fields, CSV or JSON by the extension, written "
                 "when the run succeeds")->type_name("FILE");
  app.footer("Under mpirun the split is shared among the ranks. Exit status 1 (after the numbers) when an image was\n"
             "unreadable or the model gave NaN/Inf logits.\n" + app.get_footer());
  if (auto rc = cli.parse(argc, argv)) return *rc;
  if (amp) precision = "bf16";
  return cli.run([&] {
    if (!results_file.empty()) tools::result_format_of(results_file, "--results-file");  // before the work

    dist::InitOptions io;
    io.use_gpu = device != "cpu";
    auto pg = dist::init(io);
    const Device dev = tools::device_option(device, pg->device());
    DType dtype = precision == "bf16" ? DType::bf16 : DType::f32;
    MO_CHECK(dtype == DType::f32 || dev.is_cuda(), "--precision bf16 needs a GPU (the CPU kernels run fp32)");

    tools::LoadedModel m = tools::load_model_for_eval(weights, model, dev, dtype, use_ema ? "state_dict_ema" : "");
    tools::TrainConfig c = m.train_config.value_or(tools::TrainConfig{});
    c.data.root = root;
    c.data.val_split = split;
    const tools::EvalPreprocess pre = tools::eval_preprocess_for(m, img_size, crop_pct, interp);
    c.data.img_size = pre.transform.size;
    c.data.crop_pct = pre.transform.crop_pct;
    c.data.interpolation = pre.interpolation;
    MO_CHECK(pre.origin[3] == "default" || (pre.mean == tools::EvalPreprocess{}.mean && pre.std == tools::EvalPreprocess{}.std),
             "'{}' carries mean/std {}; mo_validate's loader normalises with ImageNet's only", weights, pre.describe());
    c.data.workers = workers;
    c.train.eval_batch_size = batch;
    c.validate();
    auto loader = std::make_unique<data::Loader>(
        tools::eval_loader_config(c, pg->rank(), pg->world_size(), dev, dtype));
    MO_CHECK(loader->dataset().num_classes() <= m.num_classes, "'{}' has {} classes but the model has {} outputs",
             loader->dataset().folder(), loader->dataset().num_classes(), m.num_classes);
    if (pg->is_main())
      std::printf("%s\npreprocessing %s\nevaluating %lld images of %s at %lld px (crop %.3g, %s), %s %s\n", m.summary.c_str(),
                  pre.describe().c_str(), static_cast<long long>(loader->dataset().size()), loader->dataset().folder().c_str(),
                  static_cast<long long>(c.data.img_size), c.data.crop_pct, c.data.interpolation.c_str(),
                  dev.str().c_str(), dtype_name(dtype));
    auto t0 = std::chrono::steady_clock::now();
    auto last = t0;
    auto progress = [&](int64_t done, int64_t total) {
      const auto now = std::chrono::steady_clock::now();
      if (!pg->is_main() || (done < total && now - last < std::chrono::seconds(2))) return;
      last = now;
      const double el = std::chrono::duration<double>(now - t0).count();
      std::fprintf(stderr, "mo_validate: %lld/%lld batches (%.0f%%), %.1f s, ETA %.0f s\n", static_cast<long long>(done),
                   static_cast<long long>(total), 100.0 * static_cast<double>(done) / static_cast<double>(total), el,
                   el / static_cast<double>(done) * static_cast<double>(total - done));
    };
    tools::EvalResult r = tools::evaluate(*m.model, *loader, *pg, progress);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (pg->is_main()) {
      std::printf("top-1 %.3f%%  top-5 %.3f%%  loss %.4f  (%lld images, %.1f s, %.1f images/s)\n", r.top1_pct(),
                  r.top5_pct(), r.mean_loss(), static_cast<long long>(r.samples), s,
                  static_cast<double>(r.samples) / s);
      if (r.non_finite > 0)
        std::printf("non-finite outputs: %lld of %lld images gave NaN or Inf logits (counted as wrong above)\n",
                    static_cast<long long>(r.non_finite), static_cast<long long>(r.samples));
    }
    std::fflush(stdout);
    // The loader stands another image in for an unreadable one: the counts above are not the folder's.
    MO_CHECK(r.bad_images == 0, "'{}' holds unreadable images (named in the warnings above; {} stand-ins were "
             "drawn), so the accuracy above is not that of the folder", loader->dataset().folder(), r.bad_images);
    // A model that outputs NaN or Inf is broken (diverged training, overflow at this precision): the
    // accuracy above is right (those images count as wrong) but the weights need attention.
    MO_CHECK(r.non_finite == 0, "'{}' gives NaN or Inf logits for {} of the {} images of '{}' (counted as wrong "
             "above): its weights are not finite, or the model overflows at {}", weights, r.non_finite, r.samples,
             loader->dataset().folder(), dtype_name(dtype));
    if (pg->is_main() && !results_file.empty()) {
      const double t1 = r.top1_pct(), t5 = r.top5_pct();
      const double params = std::round(static_cast<double>(m.model->num_parameters()) / 1e4) / 100;  // M, 2 places
      auto r4 = [](double v) { return std::round(v * 1e4) / 1e4; };
      tools::ResultFile f(results_file);
      if (tools::result_format_of(results_file, "--results-file") == tools::ResultFormat::csv)
        f.write(fmt::format("model,top1,top1_err,top5,top5_err,param_count,img_size,crop_pct,interpolation\n"
                            "{},{},{},{},{},{},{},{},{}\n", tools::csv_field(m.name), r4(t1), r4(100 - t1), r4(t5),
                            r4(100 - t5), params, c.data.img_size, c.data.crop_pct,
                            tools::csv_field(c.data.interpolation)));
      else
        f.write(fmt::format("{{\n  \"model\": {},\n  \"top1\": {},\n  \"top1_err\": {},\n  \"top5\": {},\n  "
                            "\"top5_err\": {},\n  \"param_count\": {},\n  \"img_size\": {},\n  \"crop_pct\": {},\n  "
                            "\"interpolation\": {}\n}}\n", tools::json_quote(m.name), r4(t1), r4(100 - t1), r4(t5),
                            r4(100 - t5), params, c.data.img_size, c.data.crop_pct,
                            tools::json_quote(c.data.interpolation)));
      f.commit();
      std::printf("results written to %s\n", results_file.c_str());
    }
    return 0;
  });
}
