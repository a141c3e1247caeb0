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
    MO_CHECK(read_file(f, bytes, err), "mo_bench_data: {}: {}", f, err);
    bool ok = true;
    if (mode == "decode") {
      ok = ws.decoder.open(bytes.data(), bytes.size()) && ws.decoder.decode_full(full);
    } else if (mode == "eval") {
      ok = eval(bytes.data(), bytes.size(), ws, img.view(), err);
    } else {
      Rng rng(1, static_cast<uint64_t>(i));
      ok = train(bytes.data(), bytes.size(), rng, ws, img.view(), err);
    }
    MO_CHECK(ok, "mo_bench_data: {}: {}", f, err.empty() ? ws.decoder.error() : err);
    if (mode != "decode") normalize_erase_cpu(u8, meta, 0, spec, out);
    ++n;
  }
  cpu = thread_cpu_seconds() - cpu0;
  return n;
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir, modes = "decode,rrc,train,eval";
  std::vector<int> threads{1, 2};
  double seconds = 5.0;
  int64_t count = 0;  // > 0: a fixed number of images per thread instead of a time
  try {
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      auto value = [&]() -> std::string {
        MO_CHECK(i + 1 < argc, "mo_bench_data: {} needs a value", a);
        return argv[++i];
      };
      if (a == "--dir") dir = value();
      else if (a == "--threads") threads = parse_list(value());
      else if (a == "--seconds") seconds = mo::tools::option_float(a, value(), 1e-3);
      else if (a == "--modes") modes = value();
      else if (a == "--count") count = mo::tools::option_int(a, value(), 1);
      else MO_FAIL("mo_bench_data: unknown option '{}' (see the top of tools/mo_bench_data.cpp)", a);
    }
    MO_CHECK(!dir.empty(), "usage: mo_bench_data --dir DIR [--threads 1,2] [--seconds 5] [--modes decode,rrc,train,eval]");
    std::vector<std::string> files;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(dir, ec))
      if (e.path().extension() == ".jpg" || e.path().extension() == ".jpeg") files.push_back(e.path().string());
    MO_CHECK(!ec, "mo_bench_data: --dir '{}': {}", dir, ec.message());
    std::sort(files.begin(), files.end());
    MO_CHECK(!files.empty(), "mo_bench_data: no .jpg files in {}", dir);
    std::printf("%zu files in %s, %u hardware threads\n", files.size(), dir.c_str(), std::thread::hardware_concurrency());
    std::stringstream ms(modes);
    for (std::string mode; std::getline(ms, mode, ',');) {
      MO_CHECK(mode == "decode" || mode == "rrc" || mode == "train" || mode == "eval", "mo_bench_data: unknown mode '{}'", mode);
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
  } catch (const std::exception& e) {
    const std::string msg = e.what(), self = "mo_bench_data: ";
    std::fprintf(stderr, "%s%s\n", msg.rfind(self, 0) == 0 ? "" : self.c_str(), msg.c_str());
    return 1;
  }
  return 0;
}
