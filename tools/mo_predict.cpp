// mo_predict: the top-k classes of each image with their probabilities.
//
//   mo_predict --weights FILE IMAGE.jpg [IMAGE.jpg ...] [--model NAME] [--topk 5] [--classes FILE]
//              [--img-size N] [--crop-pct F] [--interpolation bicubic|bilinear] [--device auto|cpu|cuda]
//
// Class names: those stored in our checkpoints (the training folder's classes), else --classes (one name
// per line), else the 1000 ImageNet-1k names shipped in share/mo/imagenet_classes.txt for a model with
// 1000 outputs, else "class <i>". The transform is the evaluation one (mambaout.md §4).
#include <algorithm>
#include <cstdio>
#include <numeric>
#include <string>
#include <vector>

#include "autograd/cuda_allocator.h"
#include "autograd/graph.h"
#include "tools/common/cli.h"
#include "tools/common/inference.h"
#include "tools/common/omp_env.h"

using namespace mo;

namespace {

int usage(const std::string& msg) {
  std::fprintf(stderr,
               "%s%susage: mo_predict --weights FILE IMAGE.jpg [IMAGE.jpg ...] [--model NAME] [--topk 5]\n"
               "       [--classes FILE] [--img-size N] [--crop-pct F] [--interpolation bicubic|bilinear]\n"
               "       [--device auto|cpu|cuda]\n",
               msg.c_str(), msg.empty() ? "" : "\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  mo::tools::ensure_passive_omp_wait(argc, argv);
  std::string weights, model, classes_file, device = "auto", interp;
  std::vector<std::string> images;
  int64_t topk = 5, img_size = 0;
  double crop_pct = 0;
  try {
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      auto value = [&]() -> std::string {
        MO_CHECK(i + 1 < argc, "{} needs a value", a);
        return argv[++i];
      };
      if (a == "--weights" || a == "-w") weights = value();
      else if (a == "--model") model = value();
      else if (a == "--topk") topk = tools::option_int(a, value(), 1);
      else if (a == "--classes") classes_file = value();
      else if (a == "--img-size") img_size = tools::option_int(a, value(), 32, 8192);
      else if (a == "--crop-pct") crop_pct = tools::option_float(a, value(), 1e-3, 1.0);
      else if (a == "--interpolation") interp = value();
      else if (a == "--device") device = value();
      else if (a == "-h" || a == "--help") {
        usage("");
        return 0;
      } else if (!a.empty() && a[0] == '-') return usage("unknown option " + a);
      else images.push_back(a);
    }
    if (weights.empty() || images.empty()) return usage("--weights and at least one image are required");
    const Device dev = tools::device_option(device);

    tools::LoadedModel m = tools::load_model_for_eval(weights, model, dev, DType::f32);
    const std::vector<std::string> names = tools::class_names_for(m, classes_file);

    const tools::EvalPreprocess pre = tools::eval_preprocess_for(m, img_size, crop_pct, interp);
    std::fprintf(stderr, "mo_predict: %s; preprocessing %s\n", m.summary.c_str(), pre.describe().c_str());
    Tensor x = tools::load_images(images, pre.transform, dev, DType::f32, pre.normalize);
    NoGradGuard no_grad;
    std::vector<float> logits = m.model->forward_nhwc(x).to_vector<float>();
    const int64_t C = m.num_classes, k = std::min(topk, C);
    for (size_t i = 0; i < images.size(); ++i) {
      std::vector<float> row(logits.begin() + static_cast<int64_t>(i) * C, logits.begin() + (i + 1) * C);
      std::vector<double> p = tools::softmax(row);
      std::vector<int64_t> order(static_cast<size_t>(C));
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return p[a] > p[b]; });
      std::printf("%s\n", images[i].c_str());
      for (int64_t j = 0; j < k; ++j) {
        int64_t c = order[static_cast<size_t>(j)];
        std::string name = names.empty() ? fmt::format("class {}", c) : names[static_cast<size_t>(c)];
        std::printf("  %6.2f%%  %s (%lld)\n", 100.0 * p[c], name.c_str(), static_cast<long long>(c));
      }
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mo_predict: error: %s\n", e.what());
    return 1;
  }
}
