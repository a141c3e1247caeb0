// mo_serve: a local web page and JSON endpoint that classify an uploaded image.
//
//   mo_serve --weights FILE [-m NAME] [--port 8080] [--host 127.0.0.1] [--device auto|cpu|cuda]
//            [--img-size N] [--crop-pct F] [--interpolation bicubic|bilinear] [--precision fp32|bf16 | --amp]
//            [--max-batch N] [--batch-window-ms MS] [--max-connections 256] [--request-timeout 20]
//            [--idle-timeout 5] [--max-body-mb 20]
//
// GET / shows a page to pick or drop an image and see the top-5 classes with probability bars.
// POST /predict with the raw image bytes (or multipart/form-data with a field "image") answers
// {"model": ..., "ms": ..., "preprocess": {...}, "top5": [{"index": i, "name": ..., "prob": p}, ...]};
// a file that is not a decodable JPEG gets 400 {"error": ...}, a body over the limit 413.
// GET /health answers {"model", "classes", "device", "precision", "uptime_s", "requests" (predictions
// served), "batches" (model calls), "preprocess", "max_batch", "batch_window_ms"}.
// Preprocessing is mo_predict's (tools/common/inference.h): the checkpoint's image size, crop_pct and
// interpolation unless overridden, ImageNet mean/std; printed at start-up. Each connection has its own
// thread (tools/common/http_server.h: deadlines, limits, Host check) that decodes its upload; one
// inference thread owns the one model copy: it takes the first waiting image, waits up to
// --batch-window-ms for more (at most --max-batch) and runs them as one batch. Defaults: on a GPU bf16,
// batches of up to 32 within 2 ms; on the CPU fp32, one image at a time.
#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <future>
#include <mutex>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "autograd/cuda_allocator.h"
#include "autograd/graph.h"
#include "data/normalize.h"
#include "tools/common/cli.h"
#include "tools/common/http_server.h"
#include "tools/common/inference.h"
#include "tools/common/omp_env.h"
#include "tools/common/serve_page.h"

using namespace mo;
using Clock = std::chrono::steady_clock;

namespace {

// At most `n` holders at once (bounds the memory of concurrent JPEG decodes).
class Slots {
 public:
  explicit Slots(int n) : free_(n) {}
  void acquire() {
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait(lk, [&] { return free_ > 0; });
    --free_;
  }
  void release() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      ++free_;
    }
    cv_.notify_one();
  }

 private:
  int free_;
  std::mutex mu_;
  std::condition_variable cv_;
};

// The inference thread: images (size x size x 3 bytes, already transformed) in, logits out, in batches.
class Batcher {
 public:
  Batcher(const nn::Classifier& model, Device dev, DType dtype, data::NormalizeSpec norm, int size, int max_batch,
          double window_ms)
      : model_(model), dev_(dev), size_(size), max_batch_(max_batch),
        window_(std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double, std::milli>(window_ms))) {
    norm_ = norm;
    norm_.dtype = dtype;
    norm_.channels_last = true;
    thread_ = std::thread([this] { loop(); });
  }
  ~Batcher() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  // The logits of one image; blocks until its batch has run. Throws what the model threw.
  std::vector<float> run(std::vector<uint8_t> pixels) {
    Job job{std::move(pixels), {}};
    auto result = job.out.get_future();
    {
      std::lock_guard<std::mutex> lk(mu_);
      queue_.push_back(&job);
    }
    cv_.notify_all();
    return result.get();
  }
  int64_t batches() const { return batches_; }

 private:
  struct Job {
    std::vector<uint8_t> pixels;
    std::promise<std::vector<float>> out;
  };

  void loop() {
    NoGradGuard no_grad;
    std::unique_lock<std::mutex> lk(mu_);
    while (true) {
      cv_.wait(lk, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;
      if (max_batch_ > 1 && window_.count() > 0)  // collect what arrives within the window
        cv_.wait_until(lk, Clock::now() + window_,
                       [&] { return stop_ || queue_.size() >= static_cast<size_t>(max_batch_); });
      const size_t n = std::min(queue_.size(), static_cast<size_t>(max_batch_));
      std::vector<Job*> batch(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(n));
      queue_.erase(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(n));
      lk.unlock();
      ++batches_;
      try {
        std::vector<float> logits = forward(batch);
        const size_t classes = logits.size() / n;
        for (size_t i = 0; i < n; ++i)
          batch[i]->out.set_value(std::vector<float>(logits.begin() + static_cast<std::ptrdiff_t>(i * classes),
                                                     logits.begin() + static_cast<std::ptrdiff_t>((i + 1) * classes)));
      } catch (...) {
        for (Job* j : batch) j->out.set_exception(std::current_exception());
      }
      lk.lock();
    }
  }

  std::vector<float> forward(const std::vector<Job*>& batch) {
    const auto n = static_cast<int64_t>(batch.size());
    const size_t bytes = static_cast<size_t>(size_) * size_ * 3;
    Tensor pixels = Tensor::empty({n, size_, size_, 3}, DType::u8);  // (N, H, W, 3)
    for (int64_t i = 0; i < n; ++i) std::memcpy(pixels.data<uint8_t>() + i * bytes, batch[i]->pixels.data(), bytes);
    Tensor meta = Tensor::zeros({n, data::kMetaCols}, DType::i64);  // no random erasing
    if (!dev_.is_cpu()) {  // normalise on the device: a quarter of the bytes cross the bus
      pixels = pixels.to(dev_);
      meta = meta.to(dev_);
    }
    Tensor x = data::normalize_erase(pixels, meta, 0, norm_);
    return model_.forward_nhwc(x).to_vector<float>();
  }

  const nn::Classifier& model_;
  const Device dev_;
  data::NormalizeSpec norm_;
  const int size_, max_batch_;
  const Clock::duration window_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job*> queue_;
  bool stop_ = false;
  std::atomic<int64_t> batches_{0};
  std::thread thread_;
};

struct Service {
  tools::LoadedModel m;
  std::vector<std::string> names;
  Device dev = Device::cpu();
  DType dtype = DType::f32;
  tools::EvalPreprocess pre;
  int max_batch = 1;
  double window_ms = 0;
  std::unique_ptr<Batcher> batcher;
  Slots decodes{static_cast<int>(std::clamp(std::thread::hardware_concurrency(), 2u, 16u))};  // decodes at once
  Clock::time_point started = Clock::now();
  std::atomic<int64_t> served{0};

  std::string preprocess_json() const {
    const auto& n = pre.normalize;
    return fmt::format(
        "{{\"img_size\": {}, \"crop_pct\": {}, \"interpolation\": {}, \"mean\": [{:.6g}, {:.6g}, {:.6g}], "
        "\"std\": [{:.6g}, {:.6g}, {:.6g}]}}",
        pre.transform.size, pre.transform.crop_pct, tools::json_string(pre.interpolation), n.mean[0] / 255.0,
        n.mean[1] / 255.0, n.mean[2] / 255.0, n.std[0] / 255.0, n.std[1] / 255.0, n.std[2] / 255.0);
  }

  tools::HttpResponse health() const {
    double up = std::chrono::duration<double>(Clock::now() - started).count();
    return {200, "application/json",
            fmt::format("{{\"model\": {}, \"classes\": {}, \"device\": {}, \"precision\": {}, \"uptime_s\": {:.3f}, "
                        "\"requests\": {}, \"batches\": {}, \"preprocess\": {}, \"max_batch\": {}, \"batch_window_ms\": {}}}",
                        tools::json_string(m.name), m.num_classes, tools::json_string(dev.str()),
                        tools::json_string(dtype == DType::bf16 ? "bf16" : "fp32"), up, served.load(),
                        batcher->batches(), preprocess_json(), max_batch, window_ms)};
  }

  tools::HttpResponse predict(const std::string& bytes) {
    if (bytes.empty()) return tools::json_error(400, "empty upload: send the image bytes");
    auto t0 = Clock::now();
    const int s = pre.transform.size;
    std::vector<uint8_t> pixels(static_cast<size_t>(s) * s * 3);
    std::string err;
    bool ok;
    {
      decodes.acquire();
      data::Workspace ws;  // per request: a pool thread keeps no large buffers
      ok = data::EvalTransform(pre.transform)(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), ws,
                                              data::ImageView{pixels.data(), s, s, static_cast<int64_t>(s) * 3}, err);
      decodes.release();
    }
    if (!ok) return tools::json_error(400, "cannot decode the upload as an image (JPEG, PNG or WebP): " + err);
    std::vector<double> p = tools::softmax(batcher->run(std::move(pixels)));
    const std::vector<int64_t> order = tools::top_classes(p, 5);
    double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    std::string j = fmt::format("{{\"model\": {}, \"ms\": {:.3f}, \"preprocess\": {}, \"top5\": [",
                                tools::json_string(m.name), ms, preprocess_json());
    for (size_t i = 0; i < order.size(); ++i) {
      int64_t c = order[i];
      std::string name = names.empty() ? fmt::format("class {}", c) : names[static_cast<size_t>(c)];
      j += fmt::format("{}{{\"index\": {}, \"name\": {}, \"prob\": {:.17g}}}", i ? ", " : "", c,
                       tools::json_string(name), p[static_cast<size_t>(c)]);
    }
    ++served;
    return {200, "application/json", j + "]}"};
  }

  tools::HttpResponse handle(const tools::HttpRequest& r) {
    const bool get = r.method == "GET" || r.method == "HEAD";
    if (r.path == "/" || r.path == "/index.html") {
      if (!get) return tools::json_error(405, "use GET for " + r.path);
      return {200, "text/html; charset=utf-8", tools::kServePage};
    }
    if (r.path == "/health") {
      if (!get) return tools::json_error(405, "use GET for /health");
      return health();
    }
    if (r.path == "/predict") {
      if (r.method != "POST") return tools::json_error(405, "POST the image bytes to /predict");
      if (r.header("content-type").rfind("multipart/form-data", 0) == 0) {
        auto f = r.files.find("image");
        if (f == r.files.end()) return tools::json_error(400, "the multipart body has no field 'image'");
        return predict(f->second);
      }
      return predict(r.body);
    }
    return tools::json_error(404, "no such page: " + r.path);
  }
};

}  // namespace

int main(int argc, char** argv) {
  mo::tools::ensure_passive_omp_wait(argc, argv);
  // SIGINT / SIGTERM are taken by sigwait() below: blocked before any thread (OpenMP's too) starts
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  std::string weights, model, device = "auto", interp, precision;
  int64_t img_size = 0, max_batch = 0;
  double crop_pct = 0, window_ms = -1, max_body_mb = 20;
  tools::HttpServerOptions opt;
  tools::Cli cli("mo_serve", "A local web page and JSON endpoint (POST /predict, GET /health) that classify an "
                             "uploaded image.");
  CLI::App& app = cli.app;
  app.add_option("-w,--weights", weights, "checkpoint to serve (ours, .pth or .safetensors)")->type_name("FILE")->required();
  app.add_option("-m,--model", model, "model name where the file does not say (e.g. mambaout_femto, "
                 "vit_tiny_patch16_224)")->type_name("NAME");
  app.add_option("--port", opt.port, "TCP port (0: any free one)")->capture_default_str()->check(tools::int_range(0, 65535));
  app.add_option("--host", opt.host, "address to listen on")->capture_default_str();
  app.add_option("--device", device, "where to run")->capture_default_str()->check(tools::one_of({"auto", "cpu", "cuda"}));
  app.add_option("--img-size", img_size, "input size (default: the checkpoint's)")->check(tools::int_range(32, 8192));
  app.add_option("--crop-pct", crop_pct, "centre-crop fraction (default: the checkpoint's)")
      ->check(tools::number_range(1e-3, 1.0));
  app.add_option("--interpolation", interp, "resize (default: the checkpoint's)")
      ->type_name("NAME")
      ->check(tools::one_of({"bicubic", "bilinear"}));
  CLI::Option* prec = app.add_option("--precision", precision, "fp32 or bf16 (default: bf16 on a GPU, fp32 on the CPU)")
      ->type_name("NAME")
      ->check(tools::one_of({"fp32", "bf16"}));
  bool amp = false;
  app.add_flag("--amp", amp, "the same as --precision bf16 (timm's name)")->excludes(prec);
  app.add_option("--max-batch", max_batch, "images per model call (default: 32 on a GPU, 1 on the CPU)")
      ->check(tools::int_range(1, 1024));
  app.add_option("--batch-window-ms", window_ms, "wait this long for more images (default: 2 on a GPU, 0 on the CPU)")
      ->type_name("MS")
      ->check(tools::number_range(0, 1000));
  app.add_option("--max-connections", opt.max_connections, "connections served at once")
      ->capture_default_str()
      ->check(tools::int_range(1, 65536));
  app.add_option("--request-timeout", opt.request_timeout_s, "seconds to receive a whole request")
      ->capture_default_str()
      ->check(tools::number_range(0.1, 3600));
  app.add_option("--idle-timeout", opt.idle_timeout_s, "seconds a kept-alive connection may idle")
      ->capture_default_str()
      ->check(tools::number_range(0.1, 3600));
  app.add_option("--max-body-mb", max_body_mb, "largest upload in MiB (larger: 413)")
      ->capture_default_str()
      ->check(tools::number_range(1e-3, 4096));
  app.footer("Preprocessing is mo_predict's; SIGINT/SIGTERM stop the server (exit 0).\n" + app.get_footer());
  if (auto rc = cli.parse(argc, argv)) return *rc;
  if (amp) precision = "bf16";
  return cli.run([&] {
    Service sv;
    sv.dev = tools::device_option(device);
    const bool gpu = sv.dev.is_cuda();
    sv.dtype = precision.empty() ? (gpu ? DType::bf16 : DType::f32) : (precision == "bf16" ? DType::bf16 : DType::f32);
    MO_CHECK(sv.dtype == DType::f32 || gpu, "--precision bf16 needs a GPU (the CPU kernels run fp32)");
    sv.max_batch = static_cast<int>(max_batch > 0 ? max_batch : (gpu ? 32 : 1));
    sv.window_ms = window_ms >= 0 ? window_ms : (gpu ? 2.0 : 0.0);
    sv.m = tools::load_model_for_eval(weights, model, sv.dev, sv.dtype);
    sv.names = tools::class_names_for(sv.m);
    sv.pre = tools::eval_preprocess_for(sv.m, img_size, crop_pct, interp);
    sv.batcher = std::make_unique<Batcher>(*sv.m.model, sv.dev, sv.dtype, sv.pre.normalize, sv.pre.transform.size,
                                           sv.max_batch, sv.window_ms);

    opt.max_body = static_cast<size_t>(max_body_mb * 1024 * 1024);
    tools::HttpServer server(opt, [&](const tools::HttpRequest& r) { return sv.handle(r); });
    server.start();
    std::printf("mo_serve: %s on %s, %s; batches of up to %d within %g ms\n", sv.m.summary.c_str(),
                sv.dev.str().c_str(), sv.dtype == DType::bf16 ? "bf16" : "fp32", sv.max_batch, sv.window_ms);
    std::printf("mo_serve: preprocessing %s\n", sv.pre.describe().c_str());
    const bool v6 = opt.host.find(':') != std::string::npos;
    std::printf("mo_serve: listening on http://%s%s%s:%d/%s\n", v6 ? "[" : "", opt.host.c_str(), v6 ? "]" : "",
                server.port(), server.loopback() ? "" : " (not a loopback address: reachable from other machines)");
    std::fflush(stdout);
    int sig = 0;
    sigwait(&stop_signals, &sig);
    server.stop();
    return 0;
  });
}
