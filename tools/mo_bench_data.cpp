// mo_bench_data: images/s of the JPEG input pipeline over a folder of JPEGs, with 1, 2 (and N) worker
// threads -- the C++ side of scripts/data/bench_peer.py (PIL + torchvision, one thread).
//   mo_bench_data --dir DIR [--threads 1,2] [--seconds 5 | --count N] [--modes decode,rrc,train,eval]
//                 [--batch 32] [--profile] [--decoder cpu|gpu|gpu-hybrid [--gpu-streams 2]]
// Modes (each reads the file from disk every time, as a Dataset does, and ends in float32 NCHW):
//   decode  full decode to RGB
//   rrc     RandomResizedCrop 224 (random bilinear/bicubic, windowed DCT-scaled decode) + flip + normalize
//   train   the full training transform of the recipe: rrc + RandAugment rand-m9-mstd0.5-inc1, then per
//           batch mixup/cutmix (timm defaults) and random erasing (p 0.25) + normalize
//   eval    resize shorter side 224 (bicubic, antialiased) + centre crop + normalize
// --profile adds, per mode and thread count, the milliseconds per image of each stage (thread CPU time:
// read, header, decode, resize, augment, mixup, normalize) and the cost of each RandAugment op.
// --decoder gpu (a build with nvJPEG, on a GPU; modes rrc and train): each thread reads and draws a batch
// on the CPU, the batch is decoded + cropped + resized + flipped on the GPU (data/gpu_jpeg.h; the threads
// share one decoder with --gpu-streams batches in flight), then RandAugment, mixup and the rest as on the
// CPU path; the decode stage is then the thread's wall time waiting for its batch. gpu-hybrid: nvJPEG's
// GPU-hybrid backend even where the hardware JPEG engine is there.
#include <time.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <memory>
#include <sstream>
#include <thread>
#include <vector>

#include "autograd/check.h"
#include "autograd/cpu_isa.h"
#include "data/device_stage.h"
#include "data/gpu_jpeg.h"
#include "data/mixup.h"
#include "data/normalize.h"
#include "data/transforms.h"
#include "tools/common/cli.h"

using namespace mo;
using namespace mo::data;

namespace {

std::vector<int> parse_list(const std::string& s) {
  std::vector<int> v;
  std::stringstream ss(s);
  for (std::string x; std::getline(ss, x, ',');) v.push_back(static_cast<int>(mo::tools::option_int("--threads", x, 1, 4096)));
  MO_CHECK(!v.empty(), "--threads: expected thread counts like 1,2, got '{}'", s);
  return v;
}

double thread_cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

struct WorkerResult {
  int64_t images = 0;
  double cpu = 0;      // CPU seconds the thread used (on a busy machine, images per CPU second is steadier)
  StageTimes stages;   // per stage, summed over its images
  int64_t cpu_fallbacks = 0;  // --decoder gpu: images the GPU did not decode
};

// One worker's loop: transforms files[t], files[t + T], ... into a batch of `batch` slots; a full batch
// (and the last, partial one) is finished as the loader finishes it: train mixes it (mixup/cutmix) and
// draws the erase boxes, then every mode but decode normalises it (+ erasing) into float32 NCHW.
// Images count when their batch is done. Stops at `stop` or after `limit` images (> 0).
WorkerResult run_worker(const std::string& mode, const std::vector<std::string>& files, int t, int T, int batch,
                        bool profile, const std::atomic<bool>& stop, int64_t limit, GpuJpegDecoder* gpu) {
  WorkerResult res;
  const double cpu0 = thread_cpu_seconds();
  TrainTransformConfig rc;
  rc.auto_augment = mode == "train" ? rc.auto_augment : "";
  TrainTransform train(rc);
  EvalTransform eval({});
  const MixupConfig mix;
  const EraseConfig erase;
  Workspace ws;
  ws.times.thread_cpu = profile;
  std::vector<uint8_t> bytes;
  Image full;
  const int S = 224;
  HostBuffer host(static_cast<size_t>(batch) * S * S * 3);  // pinned where a GPU is present
  Tensor u8 = Tensor::from_blob(host.data(), {batch, S, S, 3}, DType::u8);
  // --decoder gpu: the batch's files, draws and rngs, until it is decoded
  std::vector<std::vector<uint8_t>> held(gpu ? static_cast<size_t>(batch) : 0);
  std::vector<GpuJob> jobs;
  std::vector<TrainDraw> draws;
  std::vector<Rng> rngs;
  std::vector<char> ok_gpu;
  std::vector<std::string> errors;
  Tensor meta = Tensor::zeros({batch, kMetaCols}, DType::i64);
  Tensor out = Tensor::empty({batch, 3, S, S});
  const NormalizeSpec spec;
  int filled = 0;
  int64_t batches = 0;
  auto finish = [&] {  // the batch's last steps, on `filled` images
    if (filled == 0) return;
    if (gpu) {  // decode on the GPU; what it refuses on the CPU; then RandAugment (train)
      StageClock gc(ws.times);
      gpu->run(jobs.data(), filled, u8.data<uint8_t>(), ok_gpu, errors);
      gc.lap(Stage::decode);
      for (int k = 0; k < filled; ++k) {
        const ImageView slot{u8.data<uint8_t>() + static_cast<size_t>(k) * S * S * 3, S, S, S * 3};
        Rng* ra = mode == "train" ? &rngs[k] : nullptr;
        std::string err;
        if (ok_gpu[k]) {
          if (ra) train.augment(slot, *ra, ws);
          continue;
        }
        ++res.cpu_fallbacks;
        MO_CHECK(train.apply_fixed(held[k].data(), held[k].size(), &draws[k].win, draws[k].interp, draws[k].flip, ra,
                                   ws, slot, err), "{}", err);
      }
      jobs.clear(), draws.clear(), rngs.clear();
    }
    StageClock clock(ws.times);
    if (mode == "train") {
      Rng rng(2, make_stream(Purpose::mixup, 0, static_cast<int64_t>(t) << 30 | batches));
      mix_batch(u8.data<uint8_t>(), filled, S, S, draw_mix_params(mix, S, S, rng));
      int64_t* m = meta.data<int64_t>();
      for (int i = 0; i < filled; ++i, m += kMetaCols) {
        Rng er(2, make_stream(Purpose::erase_box, 0, (static_cast<int64_t>(t) << 30 | batches) * batch + i));
        const EraseBox b = draw_erase_box(erase, S, S, er);
        m[0] = b.top, m[1] = b.left, m[2] = b.h, m[3] = b.w, m[4] = static_cast<int64_t>(i);
      }
      clock.lap(Stage::mixup);
    }
    if (mode != "decode") {
      Tensor o = Tensor::from_blob(out.data<float>(), {filled, 3, S, S}, DType::f32);
      normalize_erase_cpu(Tensor::from_blob(u8.data<uint8_t>(), {filled, S, S, 3}, DType::u8),
                          Tensor::from_blob(meta.data<int64_t>(), {filled, kMetaCols}, DType::i64), 3, spec, o);
      clock.lap(Stage::normalize);
    }
    res.images += filled;
    filled = 0;
    ++batches;
  };
  for (size_t i = static_cast<size_t>(t); !stop.load(std::memory_order_relaxed) && (limit <= 0 || res.images + filled < limit);
       i += static_cast<size_t>(T)) {
    const std::string& f = files[i % files.size()];
    std::string err;
    StageClock clock(ws.times);
    std::vector<uint8_t>& data = gpu ? held[static_cast<size_t>(filled)] : bytes;
    MO_CHECK(read_file(f, data, err), "{}: {}", f, err);
    clock.lap(Stage::read);
    bool ok = true;
    const ImageView slot{u8.data<uint8_t>() + static_cast<size_t>(filled) * S * S * 3, S, S, S * 3};
    if (gpu) {  // rrc / train: the draws now, the pixels when the batch is full
      Rng rng(1, static_cast<uint64_t>(i));
      TrainDraw d;
      ok = train.draw(data.data(), data.size(), rng, ws, d, err);
      GpuJob j{d.gpu ? data.data() : nullptr, data.size(), d.win.x, d.win.y, d.win.w, d.win.h, d.interp, d.flip};
      jobs.push_back(j), draws.push_back(d), rngs.push_back(rng);
    } else if (mode == "decode") {
      ok = ws.decoder.open(bytes.data(), bytes.size());
      clock.lap(Stage::header);
      ok = ok && ws.decoder.decode_full(full);
      clock.lap(Stage::decode);
    } else if (mode == "eval") {
      ok = eval(bytes.data(), bytes.size(), ws, slot, err);
    } else {
      Rng rng(1, static_cast<uint64_t>(i));
      ok = train(bytes.data(), bytes.size(), rng, ws, slot, err);
    }
    MO_CHECK(ok, "{}: {}", f, err.empty() ? ws.decoder.error() : err);
    if (++filled == batch) finish();
  }
  finish();
  res.cpu = thread_cpu_seconds() - cpu0;
  res.stages = ws.times;
  return res;
}

// --profile: each RandAugment op of the policy on a 224 x 224 crop, in microseconds per application
// (thread CPU time; geometric ops with each interpolation), and what it adds per image on average:
// the policy applies each of its `num_layers` draws with probability p, uniformly over its ops.
void profile_rand_augment(const std::string& file) {
  const RandAugmentConfig ra = TrainTransform(TrainTransformConfig{}).rand_augment().value();
  std::vector<uint8_t> bytes;
  std::string err;
  MO_CHECK(read_file(file, bytes, err), "{}: {}", file, err);
  Workspace ws;
  Image base(224, 224), img, scratch;
  TrainTransformConfig no_ra;
  no_ra.auto_augment = "";
  MO_CHECK(TrainTransform(no_ra).apply_fixed(bytes.data(), bytes.size(), nullptr, Interp::bilinear, false, nullptr, ws,
                                             base.view(), err),
           "{}: {}", file, err);
  const double per_op = ra.num_layers * ra.prob / static_cast<double>(ra.ops.size());
  std::printf("RandAugment %s on a 224x224 crop (us per application, thread CPU; each op runs on %.3f of images):\n",
              ra.policy.c_str(), per_op);
  double expected = 0;
  for (AugOp op : ra.ops) {
    double us[2] = {0, 0};
    for (int k = 0; k < 2; ++k) {
      const Interp interp = k ? Interp::bicubic : Interp::bilinear;
      const int reps = 40;
      img = base;
      const double c0 = thread_cpu_seconds();
      for (int r = 0; r < reps; ++r) {
        img = base;
        apply_aug_op(op, level_to_args(op, ra.magnitude, r % 2 == 1, ra), interp, ra, img, scratch);
      }
      us[k] = (thread_cpu_seconds() - c0) / reps * 1e6;
    }
    const bool geometric = op == AugOp::Rotate || op == AugOp::ShearX || op == AugOp::ShearY ||
                           op == AugOp::TranslateXRel || op == AugOp::TranslateYRel || op == AugOp::TranslateX ||
                           op == AugOp::TranslateY;
    const double avg = geometric ? (us[0] + us[1]) / 2 : us[0];
    expected += avg * per_op;
    if (geometric) std::printf("  %-22s %8.1f bilinear %8.1f bicubic\n", aug_op_name(op), us[0], us[1]);
    else std::printf("  %-22s %8.1f\n", aug_op_name(op), us[0]);
  }
  std::printf("  (one copy of the crop per application included; expected per image %.1f us)\n", expected);
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir, modes = "decode,rrc,train,eval", thread_list = "1,2";
  double seconds = 5.0;
  int64_t count = 0;  // > 0: a fixed number of images per thread instead of a time
  int batch = 32;
  bool profile = false;
  std::string decoder = "cpu";
  int gpu_streams = 2;
  tools::Cli cli("mo_bench_data", "Images/s of the JPEG input pipeline over a folder of JPEGs, with 1, 2 (and N) "
                                  "worker threads.");
  CLI::App& app = cli.app;
  app.add_option("--dir", dir, "the folder of .jpg files")->type_name("DIR")->required();
  app.add_option("--threads", thread_list, "worker-thread counts to time, comma-separated")
      ->type_name("N,N...")
      ->capture_default_str()
      ->check(CLI::Validator(
          [](std::string& s) {
            try {
              parse_list(s);
              return std::string();
            } catch (const Error& e) {
              return std::string(e.what()).substr(std::string("--threads: ").size());
            }
          },
          ""));
  CLI::Option* modes_opt = nullptr;
  CLI::Option* secs = app.add_option("--seconds", seconds, "seconds per mode and thread count")
                          ->capture_default_str()
                          ->check(tools::number_range(1e-3, 86400));
  app.add_option("--count", count, "images per thread instead of a time")
      ->check(tools::int_range(1))
      ->excludes(secs);
  app.add_option("--batch", batch, "images per batch (mixup/cutmix and normalisation run per batch)")
      ->capture_default_str()
      ->check(tools::int_range(1, 4096));
  app.add_flag("--profile", profile, "also print milliseconds per image of each stage and each RandAugment op");
  app.add_option("--decoder", decoder, "rrc/train decode: cpu, gpu (nvJPEG), gpu-hybrid (not its JPEG engine)")
      ->capture_default_str()
      ->check(CLI::IsMember({"cpu", "gpu", "gpu-hybrid"}));
  app.add_option("--gpu-streams", gpu_streams, "--decoder gpu: batches the GPU decoder has in flight at once")
      ->capture_default_str()
      ->check(tools::int_range(1, 64));
  modes_opt = app.add_option("--modes", modes, "what to time, comma-separated: decode, rrc, train, eval")
      ->type_name("MODE,MODE...")
      ->capture_default_str()
      ->check(CLI::Validator(
          [](std::string& s) {
            std::stringstream ms(s);
            for (std::string m; std::getline(ms, m, ',');)
              if (m != "decode" && m != "rrc" && m != "train" && m != "eval")
                return fmt::format("expected decode, rrc, train or eval, got '{}' in '{}'", m, s);
            return s.empty() ? std::string("expected decode, rrc, train or eval, got ''") : std::string();
          },
          ""));
  app.footer("Modes (each reads the file from disk every time and ends in float32 NCHW): decode = full decode to RGB;\n"
             "rrc = RandomResizedCrop 224 + flip + normalize; train = rrc + RandAugment rand-m9-mstd0.5-inc1, then per\n"
             "batch mixup/cutmix and random erasing; eval = resize shorter side 224 (bicubic) + centre crop + normalize.\n" + app.get_footer());
  if (auto rc = cli.parse(argc, argv)) return *rc;
  const std::vector<int> threads = parse_list(thread_list);
  return cli.run([&] {
    std::unique_ptr<GpuJpegDecoder> gpu;
    if (decoder != "cpu") {
      if (modes_opt->count() == 0) modes = "rrc,train";  // what the GPU path does
      MO_CHECK(modes.find("decode") == std::string::npos && modes.find("eval") == std::string::npos,
               "--decoder {} times the training transform: --modes rrc and/or train, got '{}'", decoder, modes);
      MO_CHECK(gpu_jpeg_built(), "--decoder gpu: this build of mo has no nvJPEG (configure with CUDA where nvjpeg.h "
               "and libnvjpeg are found, or MO_NVJPEG_ROOT)");
      MO_CHECK(gpu_jpeg_available(), "--decoder gpu: no GPU is present");
      gpu = std::make_unique<GpuJpegDecoder>(0, 224, gpu_streams, decoder == "gpu");
      std::printf("decoder: nvJPEG %s backend, %d batches in flight\n", gpu->hardware() ? "hardware" : "GPU-hybrid",
                  gpu_streams);
    }
    std::vector<std::string> files;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(dir, ec))
      if (e.path().extension() == ".jpg" || e.path().extension() == ".jpeg") files.push_back(e.path().string());
    MO_CHECK(!ec, "--dir '{}': {}", dir, ec.message());
    std::sort(files.begin(), files.end());
    MO_CHECK(!files.empty(), "no .jpg files in {}", dir);
    std::printf("%zu files in %s, %u hardware threads, %s kernels, libjpeg-turbo %s\n", files.size(), dir.c_str(),
                std::thread::hardware_concurrency(), cpu_isa_name(cpu_isa()), libjpeg_turbo_version().c_str());
    if (profile && modes.find("train") != std::string::npos) profile_rand_augment(files[0]);
    std::stringstream ms(modes);
    for (std::string mode; std::getline(ms, mode, ',');) {
      for (int T : threads) {
        std::atomic<bool> stop{false};
        std::vector<WorkerResult> results(static_cast<size_t>(T));
        std::vector<std::thread> pool;
        std::vector<std::exception_ptr> errors(static_cast<size_t>(T));  // a bad file ends the run, not the process
        const GpuDecodeTimes g0 = gpu ? gpu->times() : GpuDecodeTimes{};
        auto t0 = std::chrono::steady_clock::now();
        for (int t = 0; t < T; ++t)
          pool.emplace_back([&, t] {
            try {
              results[t] = run_worker(mode, files, t, T, batch, profile, stop, count, gpu.get());
            } catch (...) {
              errors[t] = std::current_exception();
              stop = true;
            }
          });
        if (count <= 0) {
          const auto until = t0 + std::chrono::duration<double>(seconds);
          while (!stop && std::chrono::steady_clock::now() < until)
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
          stop = true;
        }
        for (auto& th : pool) th.join();
        for (auto& e : errors)
          if (e) std::rethrow_exception(e);
        const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        int64_t n = 0, fallbacks = 0;
        double cpu_s = 0;
        StageTimes st;
        for (const WorkerResult& r : results) {
          n += r.images, cpu_s += r.cpu, fallbacks += r.cpu_fallbacks;
          for (int k = 0; k < kNumStages; ++k) st.ns[k] += r.stages.ns[k];
        }
        std::printf("mo %-7s %2d threads %9.1f images/s  %8.1f per thread  %8.1f per CPU second%s\n",
                    (gpu ? mode + "-gpu" : mode).c_str(), T, n / dt, n / dt / T, n / cpu_s,
                    gpu ? fmt::format("  ({} of {} decoded on the CPU)", fallbacks, n).c_str() : "");
        if (gpu) std::printf("   %s\n", describe(g0, gpu->times()).c_str());
        if (profile && n > 0) {
          std::printf("   ms per image:");
          for (int k = 0; k < kNumStages; ++k)
            if (st.ns[k] > 0) std::printf(" %s %.3f", stage_name(static_cast<Stage>(k)), st.ns[k] * 1e-6 / n);
          std::printf(" | other %.3f | total %.3f (thread CPU)\n", (cpu_s * 1e9 - st.total()) * 1e-6 / n,
                      cpu_s * 1e3 / n);
        }
        std::fflush(stdout);
      }
    }
    return 0;
  });
}
