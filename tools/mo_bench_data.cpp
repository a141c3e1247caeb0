// mo_bench_data: images/s of the JPEG input pipeline over a folder of JPEGs, with 1, 2 (and N) worker
// threads -- the C++ side of scripts/data/bench_peer.py (PIL + torchvision, one thread).
//   mo_bench_data --dir DIR [--threads 1,2] [--seconds 5 | --count N] [--modes decode,rrc,train,eval]
// Modes (each reads the file from disk every time, as a Dataset does, and ends in float32 NCHW):
//   decode  full decode to RGB
//   rrc     RandomResizedCrop 224 (random bilinear/bicubic, windowed DCT-scaled decode) + flip + normalize
//   train   the full training transform of the recipe: rrc + RandAugment rand-m9-mstd0.5-inc1 + normalize
//   eval    resize shorter side 224 (bicubic, antialiased) + centre crop + normalize
#include <time.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <sstream>
#include <thread>
#include <vector>

#include "autograd/check.h"
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

// One worker's loop: transforms files[t], files[t + T], ... until `stop`; returns images done and the
// CPU seconds the thread used (on a busy machine, images per CPU second is the steadier figure).
int64_t run_worker(const std::string& mode, const std::vector<std::string>& files, int t, int T,
                   const std::atomic<bool>& stop, double& cpu, int64_t limit) {
  const double cpu0 = thread_cpu_seconds();
  TrainTransformConfig rc;
  rc.auto_augment = mode == "train" ? rc.auto_augment : "";
  TrainTransform train(rc);
  EvalTransform eval({});
  Workspace ws;
  std::vector<uint8_t> bytes;
  Image img(224, 224), full;
  Tensor u8 = Tensor::from_blob(img.data(), {1, 224, 224, 3}, DType::u8);
  Tensor meta = Tensor::zeros({1, kMetaCols}, DType::i64);
  Tensor out = Tensor::empty({1, 3, 224, 224});
  const NormalizeSpec spec;
  int64_t n = 0;
  for (size_t i = static_cast<size_t>(t); !stop.load(std::memory_order_relaxed) && (limit <= 0 || n < limit);
       i += static_cast<size_t>(T)) {
    const std::string& f = files[i % files.size()];
    std::string err;
    MO_CHECK(read_file(f, bytes, err), "{}: {}", f, err);
    bool ok = true;
    if (mode == "decode") {
      ok = ws.decoder.open(bytes.data(), bytes.size()) && ws.decoder.decode_full(full);
    } else if (mode == "eval") {
      ok = eval(bytes.data(), bytes.size(), ws, img.view(), err);
    } else {
      Rng rng(1, static_cast<uint64_t>(i));
      ok = train(bytes.data(), bytes.size(), rng, ws, img.view(), err);
    }
    MO_CHECK(ok, "{}: {}", f, err.empty() ? ws.decoder.error() : err);
    if (mode != "decode") normalize_erase_cpu(u8, meta, 0, spec, out);
    ++n;
  }
  cpu = thread_cpu_seconds() - cpu0;
  return n;
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir, modes = "decode,rrc,train,eval", thread_list = "1,2";
  double seconds = 5.0;
  int64_t count = 0;  // > 0: a fixed number of images per thread instead of a time
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
  CLI::Option* secs = app.add_option("--seconds", seconds, "seconds per mode and thread count")
                          ->capture_default_str()
                          ->check(tools::number_range(1e-3, 86400));
  app.add_option("--count", count, "images per thread instead of a time")
      ->check(tools::int_range(1))
      ->excludes(secs);
  app.add_option("--modes", modes, "what to time, comma-separated: decode, rrc, train, eval")
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
             "rrc = RandomResizedCrop 224 + flip + normalize; train = rrc + RandAugment rand-m9-mstd0.5-inc1;\n"
             "eval = resize shorter side 224 (bicubic) + centre crop + normalize.\n" + app.get_footer());
  if (auto rc = cli.parse(argc, argv)) return *rc;
  const std::vector<int> threads = parse_list(thread_list);
  return cli.run([&] {
    std::vector<std::string> files;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(dir, ec))
      if (e.path().extension() == ".jpg" || e.path().extension() == ".jpeg") files.push_back(e.path().string());
    MO_CHECK(!ec, "--dir '{}': {}", dir, ec.message());
    std::sort(files.begin(), files.end());
    MO_CHECK(!files.empty(), "no .jpg files in {}", dir);
    std::printf("%zu files in %s, %u hardware threads\n", files.size(), dir.c_str(), std::thread::hardware_concurrency());
    std::stringstream ms(modes);
    for (std::string mode; std::getline(ms, mode, ',');) {
      for (int T : threads) {
        std::atomic<bool> stop{false};
        std::vector<int64_t> counts(static_cast<size_t>(T));
        std::vector<double> cpu(static_cast<size_t>(T));
        std::vector<std::thread> pool;
        std::vector<std::exception_ptr> errors(static_cast<size_t>(T));  // a bad file ends the run, not the process
        auto t0 = std::chrono::steady_clock::now();
        for (int t = 0; t < T; ++t)
          pool.emplace_back([&, t] {
            try {
              counts[t] = run_worker(mode, files, t, T, stop, cpu[t], count);
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
        int64_t n = 0;
        double cpu_s = 0;
        for (int t = 0; t < T; ++t) n += counts[t], cpu_s += cpu[t];
        std::printf("mo %-7s %2d threads %9.1f images/s  %8.1f per thread  %8.1f per CPU second\n", mode.c_str(), T,
                    n / dt, n / dt / T, n / cpu_s);
        std::fflush(stdout);
      }
    }
    return 0;
  });
}
