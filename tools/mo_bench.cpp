// mo_bench: synthetic-data speed of a classifier (a MambaOut variant or a ViT): training step (forward,
// backward, AdamW) and inference, images/s and peak device memory. Fresh random inputs every run (never
// zeros). Images go in as (B, 3, H, W), as timm's models take them.
//   mo_bench [-m mambaout_femto] [-b 32] [--img 224] [--device cpu|cuda] [--dtype fp32|bf16]
//            [--mode train|infer|both] [--warmup 3] [--iters 10] [--threads N] [--json] [--profile]
//            [--attention full|causal]   (ViT models only)
//            [--graph]   (CUDA inference: also time replays of a CUDA graph of the forward, an experiment:
//                         tools/bench/cuda_graph.h)
//            [--loader DIR [--loader-decoder cpu|gpu] [--loader-workers 16] [--loader-set KEY=VALUE]...]
//                         (training: the step timed with a Loader on the ImageFolder DIR delivering batches
//                         beside it, tools/bench/loader_drain.h)
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "autograd/cuda_allocator.h"
#include "autograd/graph.h"
#include "nn/adamw.h"
#include "nn/classifier.h"
#include "nn/io/json_lite.h"
#include "nn/mambaout.h"
#include "nn/vit.h"
#include "ops/loss/cross_entropy.h"
#include "tools/bench/loader_drain.h"
#include "tools/common/cli.h"
#ifdef MO_WITH_CUDA
#include "tools/bench/cuda_graph.h"
#endif

using namespace mo;

namespace {

struct Args {
  std::string model = "mambaout_femto", device = "cpu", dtype = "fp32", mode = "both", attention = "full";
  std::string loader, loader_decoder = "cpu";
  std::vector<std::string> loader_sets;
  int batch = 32, img = 224, warmup = 3, iters = 10, threads = 0, loader_workers = 16, run_ahead = 0;
  bool json = false, profile = false, graph = false, legacy_stream = false;
};

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

}  // namespace

int main(int argc, char** argv) {
  Args a;
  tools::Cli cli("mo_bench", "Synthetic-data speed of a MambaOut variant or a ViT: training step and inference, "
                             "images/s and peak device memory.");
  CLI::App& app = cli.app;
  using tools::int_range;
  using tools::one_of;
  app.add_option("-m,--model", a.model, "model name")->capture_default_str();
  app.add_option("-b,--batch,--batch-size", a.batch, "images per step")->capture_default_str()->check(int_range(1, 1 << 20));
  app.add_option("--img,--img-size", a.img, "image side in pixels")->capture_default_str()->check(int_range(32, 4096));
  app.add_option("--device", a.device, "where to run")->capture_default_str()->check(one_of({"cpu", "cuda"}));
  app.add_option("--dtype", a.dtype, "precision")->capture_default_str()->check(one_of({"fp32", "bf16"}));
  app.add_option("--mode", a.mode, "what to time")->capture_default_str()->check(one_of({"train", "infer", "both"}));
  app.add_option("--warmup", a.warmup, "untimed steps first")->capture_default_str()->check(int_range(0, 1 << 20));
  app.add_option("--iters", a.iters, "timed steps")->capture_default_str()->check(int_range(1, 1 << 20));
  app.add_option("--threads", a.threads, "OpenMP threads (0: the default)")
      ->capture_default_str()
      ->check(int_range(0, 4096));
  app.add_option("--attention", a.attention, "ViT models: fully-visible or causal attention")
      ->capture_default_str()
      ->check(one_of({"full", "causal"}));
  app.add_flag("--json", a.json, "one JSON line per mode instead of text");
  app.add_flag("--graph", a.graph, "CUDA inference: also time replays of the forward captured in a CUDA graph (experiment)");
  app.add_flag("--profile", a.profile, "after training, time one more step part by part (on stderr)");
  app.add_flag("--legacy-stream", a.legacy_stream, "CUDA: compute on the legacy default stream instead of a stream of "
               "its own, as mo_train does (for comparing the two beside --loader)");
  app.add_option("--run-ahead", a.run_ahead, "training on CUDA: steps the host may queue ahead of the GPU (0: no "
                 "bound; mo_train: train.run_ahead)")
      ->capture_default_str()
      ->check(int_range(0, 64));
  app.add_option("--loader", a.loader, "training: time the step while a data loader delivers training batches from "
                 "this ImageFolder (DIR/train/<class>/*.jpg, the full recipe transform) beside it, and report its rate "
                 "(the peak memory then includes the loader's batches)")
      ->check(CLI::ExistingDirectory);
  app.add_option("--loader-decoder", a.loader_decoder, "--loader: where its JPEGs are decoded")
      ->capture_default_str()
      ->check(one_of({"cpu", "gpu"}));
  app.add_option("--loader-workers", a.loader_workers, "--loader: its worker threads")
      ->capture_default_str()
      ->check(int_range(1, 4096));
  app.add_option("--loader-set", a.loader_sets, "--loader: a recipe key of its loader, KEY=VALUE (data.prefetch=8, "
                 "data.gpu_batches=4; repeatable)");
  if (auto rc = cli.parse(argc, argv)) return *rc;
  return cli.run([&] {
    if (a.graph) {
#ifndef MO_WITH_CUDA
      MO_FAIL("--graph: this build of mo has no CUDA support (configure with -DMO_WITH_CUDA=ON)");
#endif
      MO_CHECK(a.device == "cuda" && a.mode != "train", "--graph times CUDA inference: it needs --device cuda and "
                                                        "--mode infer or both");
    }
    MO_CHECK(a.loader.empty() || a.mode != "infer", "--loader times the training step beside a loader: it needs "
             "--mode train or both");
    if (a.threads > 0) omp_set_num_threads(a.threads);
    Device dev = a.device == "cuda" ? Device::cuda(0) : Device::cpu();
    std::unique_ptr<CudaOwnStream> own;  // mo_train's compute stream
    if (dev.is_cuda() && !a.legacy_stream) own = std::make_unique<CudaOwnStream>(0);
    DType dt = a.dtype == "bf16" ? DType::bf16 : DType::f32;
    nn::ClassifierSpec spec;
    spec.name = a.model, spec.attention = a.attention;
    std::unique_ptr<nn::Classifier> net = nn::make_classifier(spec, 0);
    nn::Classifier& model = *net;
    const auto* mambaout = dynamic_cast<const nn::MambaOut*>(net.get());
    const auto* vit = dynamic_cast<const nn::VisionTransformer*>(net.get());
    MO_CHECK(mambaout || vit, "mo_bench: no NCHW forward for model '{}'", a.model);
    auto forward = [&](const Tensor& x) { return mambaout ? mambaout->forward(x) : vit->forward(x); };
    const int64_t num_classes = spec.num_classes;
    nn::AdamW opt(model, dev, dt);
    // fresh random batch (uniform in the normalised-image range) and soft targets
    Generator g(1234);
    std::vector<float> xv(static_cast<size_t>(a.batch) * 3 * a.img * a.img);
    for (auto& v : xv) v = g.uniform() * 4.0f - 2.0f;
    Tensor x = Tensor::from_vector(xv, {a.batch, 3, a.img, a.img}, dev).to(dt);
    std::vector<int64_t> lv(a.batch);
    for (auto& l : lv) l = g.randint(num_classes);
    Tensor target = smooth_one_hot(Tensor::from_vector(lv, {a.batch}), num_classes, 0.1, DType::f32, dev);
    auto sync = [&]() {
      if (dev.is_cuda()) cuda_synchronize();
    };
    const std::string attention_json = vit ? "\"attention\": \"" + a.attention + "\", " : "";
    std::unique_ptr<bench::LoaderDrain> drain;  // --loader: started before the warm-up steps
    std::string loader_json, loader_text;
    auto report = [&](const char* what, double secs) {
      double ips = a.batch * a.iters / secs;
      double peak = dev.is_cuda() ? cuda_memory_stats(0).peak_allocated / 1073741824.0 : 0.0;
      if (a.json)
        std::printf(
            "{\"tool\": \"mo\", \"model\": \"%s\", \"mode\": \"%s\", \"device\": \"%s\", \"dtype\": \"%s\", "
            "%s"
            "\"batch\": %d, \"img\": %d, \"threads\": %d, \"images_per_s\": %.2f, \"peak_gib\": %.3f%s}\n",
            a.model.c_str(), what, a.device.c_str(), a.dtype.c_str(), attention_json.c_str(), a.batch, a.img,
            omp_get_max_threads(), ips, peak, loader_json.c_str());
      else
        std::printf("mo %s %s %s %s batch %d img %d: %.1f images/s, peak %.2f GiB%s\n", a.model.c_str(), what,
                    a.device.c_str(), a.dtype.c_str(), a.batch, a.img, ips, peak, loader_text.c_str());
      std::fflush(stdout);
    };
    if (a.mode == "train" || a.mode == "both") {
      model.train();
      auto step = [&](int i) {
        model.set_drop_path_key(0, i);
        opt.zero_grad();
        Tensor loss = soft_target_cross_entropy(forward(x), target);
        loss.backward();
        opt.step(1e-4);
      };
      if (!a.loader.empty())
        drain = std::make_unique<bench::LoaderDrain>(
            bench::drain_config(a.loader, a.batch, a.img, a.loader_workers, a.loader_decoder, dt, dev.is_cuda(),
                                a.loader_sets));
      CudaRunAhead pace(dev.is_cuda() ? a.run_ahead : 0);
      for (int i = 0; i < a.warmup; ++i) step(i), pace.mark();
      sync();
      if (dev.is_cuda()) cuda_reset_peak_stats(0);
      double t0 = now();
      const int64_t n0 = drain ? drain->images() : 0;
      const data::LoaderStats s0 = drain ? drain->stats() : data::LoaderStats{};
      for (int i = 0; i < a.iters; ++i) step(a.warmup + i), pace.mark();
      sync();
      const double t1 = now();
      if (drain) {
        const double rate = static_cast<double>(drain->images() - n0) / (t1 - t0);
        const std::string what = bench::describe_loader(s0, drain->stats(), a.loader_workers, t1 - t0);
        std::string sets;
        for (const std::string& k : a.loader_sets) sets += (sets.empty() ? "" : " ") + k;
        loader_json = fmt::format(", \"loader\": \"{}\", \"loader_workers\": {}, \"loader_images_per_s\": {:.1f}, "
                                  "\"loader_sets\": {}, \"loader_stats\": {}", drain->decoder(), a.loader_workers, rate,
                                  nn::io::json_quote(sets), nn::io::json_quote(what));
        loader_text = fmt::format("; beside it the loader ({}, {} workers) delivered {:.1f} images/s ({})",
                                  drain->decoder(), a.loader_workers, rate, what);
        drain.reset();
      }
      report("train", t1 - t0);
      loader_json.clear(), loader_text.clear();  // the inference rows have no loader beside them
      if (a.profile) {  // one more step, timed part by part with synchronisation
        set_backward_profiling(true);
        model.set_drop_path_key(0, 999);
        double t1 = now();
        opt.zero_grad();
        sync();
        double t2 = now();
        profile_forward_mark();
        Tensor loss = soft_target_cross_entropy(forward(x), target);
        sync();
        double t3 = now();
        loss.backward();
        sync();
        double t4 = now();
        opt.step(1e-4);
        sync();
        double t5 = now();
        set_backward_profiling(false);
        std::fprintf(stderr, "step parts: zero_grad %.2f ms, forward %.2f ms, backward %.2f ms, optimizer %.2f ms\n",
                     (t2 - t1) * 1e3, (t3 - t2) * 1e3, (t4 - t3) * 1e3, (t5 - t4) * 1e3);
        print_backward_profile();
      }
    }
    if (a.mode == "infer" || a.mode == "both") {
      model.eval();
      NoGradGuard ng;
      for (int i = 0; i < a.warmup; ++i) forward(x);
      sync();
      if (dev.is_cuda()) cuda_reset_peak_stats(0);
      double t0 = now();
      for (int i = 0; i < a.iters; ++i) forward(x);
      sync();
      report("infer", now() - t0);
      if (a.graph) {
#ifdef MO_WITH_CUDA
        cuda_reset_peak_stats(0);
        const bench::GraphTiming gt = bench::graph_replay_time([&] { return forward(x); }, a.warmup, a.iters);
        std::fprintf(stderr, "graph: %d nodes, replayed output vs eager: max |diff| %.3g\n", gt.kernels,
                     gt.max_abs_diff);
        report("infer_graph", gt.seconds);
#endif
      }
    }
    return 0;
  });
}
