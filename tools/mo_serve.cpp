// mo_serve: a local web page and JSON endpoint that classify an uploaded image.
//
//   mo_serve --weights FILE [--model NAME] [--port 8080] [--host 127.0.0.1] [--device auto|cpu|cuda]
//            [--max-connections 256] [--request-timeout 20] [--idle-timeout 5] [--max-body-mb 20]
//
// GET / shows a page to pick or drop an image and see the top-5 classes with probability bars.
// POST /predict with the raw image bytes (or multipart/form-data with a field "image") answers
// {"model": ..., "ms": ..., "top5": [{"index": i, "name": ..., "prob": p}, ...]}; a file that is not a
// decodable JPEG gets 400 {"error": ...}, a body over the limit 413. The model is loaded once; each
// connection has its own thread (tools/common/http_server.h: deadlines, limits, Host check) and requests
// take turns on the model. Preprocessing is the reference demo's:
// shorter side to 224 with antialiased bilinear (as PIL), centre crop 224, ImageNet mean/std; softmax.
#include <algorithm>
#include <chrono>
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <mutex>
#include <numeric>
#include <string>
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

namespace {

int usage(const std::string& msg) {
  std::fprintf(stderr,
               "%s%susage: mo_serve --weights FILE [--model NAME] [--port 8080] [--host 127.0.0.1]\n"
               "       [--device auto|cpu|cuda] [--max-connections 256] [--request-timeout 20]\n"
               "       [--idle-timeout 5] [--max-body-mb 20]\n",
               msg.c_str(), msg.empty() ? "" : "\n");
  return 2;
}

struct Classifier {
  tools::LoadedModel m;
  std::vector<std::string> names;
  Device dev = Device::cpu();
  data::EvalTransform transform{data::EvalTransformConfig{224, 1.0, data::Interp::bilinear, false}};
  data::Workspace ws;
  std::mutex mu;  // one request at a time on the model and the workspace

  tools::HttpResponse predict(const std::string& bytes) {
    if (bytes.empty()) return tools::json_error(400, "empty upload: send the image bytes");
    auto t0 = std::chrono::steady_clock::now();
    std::lock_guard<std::mutex> lk(mu);
    const int s = transform.config().size;
    Tensor pixels = Tensor::empty({1, s, s, 3}, DType::u8);
    data::ImageView view{pixels.data<uint8_t>(), s, s, static_cast<int64_t>(s) * 3};
    std::string err;
    if (!transform(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), ws, view, err))
      return tools::json_error(400, "cannot decode the upload as a JPEG image: " + err);
    Tensor meta = Tensor::zeros({1, data::kMetaCols}, DType::i64);
    Tensor x = data::normalize_erase(pixels, meta, 0, data::imagenet_normalize(DType::f32, /*channels_last=*/true));
    if (!dev.is_cpu()) x = x.to(dev);
    NoGradGuard no_grad;
    std::vector<double> p = tools::softmax(m.model->forward_nhwc(x).to_vector<float>());
    std::vector<int64_t> order(p.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return p[a] > p[b]; });
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    std::string j = fmt::format("{{\"model\": {}, \"ms\": {:.3f}, \"top5\": [", tools::json_string(m.name), ms);
    for (size_t i = 0; i < std::min<size_t>(5, order.size()); ++i) {
      int64_t c = order[i];
      std::string name = names.empty() ? fmt::format("class {}", c) : names[static_cast<size_t>(c)];
      j += fmt::format("{}{{\"index\": {}, \"name\": {}, \"prob\": {:.17g}}}", i ? ", " : "", c,
                       tools::json_string(name), p[static_cast<size_t>(c)]);
    }
    return {200, "application/json", j + "]}"};
  }
};

}  // namespace

int main(int argc, char** argv) {
  mo::tools::ensure_passive_omp_wait(argc, argv);
  std::string weights, model, device = "auto";
  tools::HttpServerOptions opt;
  double max_body_mb = 20;
  // SIGINT / SIGTERM are taken by sigwait() in main: blocked before any thread (OpenMP's too) starts
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  try {
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      auto value = [&]() -> std::string {
        MO_CHECK(i + 1 < argc, "{} needs a value", a);
        return argv[++i];
      };
      if (a == "--weights" || a == "-w") weights = value();
      else if (a == "--model") model = value();
      else if (a == "--port") opt.port = static_cast<int>(tools::option_int(a, value(), 0, 65535));
      else if (a == "--host") opt.host = value();
      else if (a == "--device") device = value();
      else if (a == "--max-connections") opt.max_connections = static_cast<int>(tools::option_int(a, value(), 1, 65536));
      else if (a == "--request-timeout") opt.request_timeout_s = tools::option_float(a, value(), 0.1, 3600);
      else if (a == "--idle-timeout") opt.idle_timeout_s = tools::option_float(a, value(), 0.1, 3600);
      else if (a == "--max-body-mb") max_body_mb = tools::option_float(a, value(), 1e-3, 4096);
      else if (a == "-h" || a == "--help") {
        usage("");
        return 0;
      } else return usage("unknown argument " + a);
    }
    if (weights.empty()) return usage("--weights is required");
    Classifier cl;
    cl.dev = tools::device_option(device);
    cl.m = tools::load_model_for_eval(weights, model, cl.dev, DType::f32);
    cl.names = tools::class_names_for(cl.m);

    opt.max_body = static_cast<size_t>(max_body_mb * 1024 * 1024);
    tools::HttpServer server(opt, [&](const tools::HttpRequest& r) -> tools::HttpResponse {
      if (r.path == "/" || r.path == "/index.html") {
        if (r.method != "GET" && r.method != "HEAD") return tools::json_error(405, "use GET for " + r.path);
        return {200, "text/html; charset=utf-8", tools::kServePage};
      }
      if (r.path == "/predict") {
        if (r.method != "POST") return tools::json_error(405, "POST the image bytes to /predict");
        std::string ct = r.header("content-type");
        if (ct.rfind("multipart/form-data", 0) == 0) {
          auto f = r.files.find("image");
          if (f == r.files.end()) return tools::json_error(400, "the multipart body has no field 'image'");
          return cl.predict(f->second);
        }
        return cl.predict(r.body);
      }
      return tools::json_error(404, "no such page: " + r.path);
    });
    server.start();
    const bool v6 = opt.host.find(':') != std::string::npos;
    std::printf("mo_serve: %s on %s; listening on http://%s%s%s:%d/%s\n", cl.m.summary.c_str(),
                cl.dev.is_cuda() ? "cuda" : "cpu", v6 ? "[" : "", opt.host.c_str(), v6 ? "]" : "", server.port(),
                server.loopback() ? "" : " (not a loopback address: reachable from other machines)");
    std::fflush(stdout);
    int sig = 0;
    sigwait(&stop_signals, &sig);
    server.stop();
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mo_serve: error: %s\n", e.what());
    return 1;
  }
}
