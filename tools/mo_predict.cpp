// mo_predict: the top-k classes of each image with their probabilities.
//
//   mo_predict --weights FILE INPUT [INPUT ...] [-m NAME] [--use-ema] [--topk 5] [--classes FILE]
//              [--img-size N] [--crop-pct F] [--interpolation bicubic|bilinear] [--device auto|cpu|cuda]
//              [--precision fp32|bf16] [--amp] [-b N] [--json] [--output FILE.json|FILE.csv] [--logits]
//
// The command line is tools/common/cli.h's, with timm's names where they mean the same (-b, -m, --amp,
// --img-size, --crop-pct, --interpolation, --use-ema: the checkpoint's EMA weights).
//
// INPUT: an image file (JPEG, PNG or WebP, told apart by their bytes), a folder (its image files,
// recursively, sorted) or @LIST (a file naming one image per line). Images go through the model in
// batches of --batch-size, so memory stays the same for ten images or a million; progress goes to stderr.
// Output: a text listing on stdout; --json prints JSON instead; --output writes JSON or CSV (by the
// extension) to a file, renamed into place when complete. --logits adds the raw logits of every class.
// An image that cannot be read or decoded is reported in the output (and on stderr) in its place and
// the run goes on; the exit status is then 1.
//
// Class names: those stored in our checkpoints (the training folder's classes), else --classes (one name
// per line), else the 1000 ImageNet-1k names shipped in share/mo/imagenet_classes.txt for a model with
// 1000 outputs, else "class <i>". The transform is the evaluation one (mambaout.md §4).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "autograd/cuda_allocator.h"
#include "autograd/graph.h"
#include "tools/common/cli.h"
#include "tools/common/inference.h"
#include "tools/common/omp_env.h"
#include "tools/common/result_writer.h"

using namespace mo;

namespace {

// One image's result: the top-k (index, probability) and the logits, or the reason it has none.
struct Prediction {
  std::string path, error;
  std::vector<std::pair<int64_t, double>> top;
  std::vector<float> logits;
};

// Writes predictions as text, JSON or CSV, one image at a time.
class Writer {
 public:
  Writer(tools::ResultFormat f, bool text, const std::vector<std::string>& names, int64_t k, int64_t classes,
         bool logits)
      : json_(f == tools::ResultFormat::json), text_(text), names_(names), k_(k), classes_(classes), logits_(logits) {}

  std::string begin(const std::string& model, const std::string& weights, const tools::EvalPreprocess& pre) const {
    if (text_) return "";
    const auto& n = pre.normalize;  // mean/std in 0..255 units: written as timm's (0..1)
    if (json_)
      return fmt::format("{{\"model\": {}, \"weights\": {}, \"num_classes\": {}, \"topk\": {}, \"preprocess\": "
                         "{{\"img_size\": {}, \"crop_pct\": {}, \"interpolation\": {}, \"mean\": [{:.6g}, {:.6g}, "
                         "{:.6g}], \"std\": [{:.6g}, {:.6g}, {:.6g}]}},\n\"images\": [\n",
                         tools::json_quote(model), tools::json_quote(weights), classes_, k_, pre.transform.size,
                         pre.transform.crop_pct, tools::json_quote(pre.interpolation), n.mean[0] / 255.0,
                         n.mean[1] / 255.0, n.mean[2] / 255.0, n.std[0] / 255.0, n.std[1] / 255.0, n.std[2] / 255.0);
    std::string h = "path,error";
    for (int64_t j = 1; j <= k_; ++j) h += fmt::format(",top{0}_index,top{0}_name,top{0}_prob", j);
    for (int64_t c = 0; logits_ && c < classes_; ++c) h += fmt::format(",logit_{}", c);
    return h + "\n";
  }

  std::string image(const Prediction& p, bool first) const {
    if (text_) {
      std::string o = p.path + "\n";
      if (!p.error.empty()) return o + "  error: " + p.error + "\n";
      for (const auto& [c, prob] : p.top) o += fmt::format("  {:6.2f}%  {} ({})\n", 100.0 * prob, name(c), c);
      return o;
    }
    if (json_) {
      std::string o = fmt::format("{}{{\"path\": {}", first ? "" : ",\n", tools::json_quote(p.path));
      if (!p.error.empty()) return o + ", \"error\": " + tools::json_quote(p.error) + "}";
      o += ", \"top\": [";
      for (size_t j = 0; j < p.top.size(); ++j)
        o += fmt::format("{}{{\"index\": {}, \"name\": {}, \"prob\": {}}}", j ? ", " : "", p.top[j].first,
                         tools::json_quote(name(p.top[j].first)), tools::json_number(p.top[j].second));
      o += "]";
      if (logits_) {
        o += ", \"logits\": [";
        for (size_t c = 0; c < p.logits.size(); ++c) o += (c ? ", " : "") + tools::json_number(p.logits[c]);
        o += "]";
      }
      return o + "}";
    }
    std::string o = tools::csv_field(p.path) + "," + tools::csv_field(p.error);
    for (int64_t j = 0; j < k_; ++j) {
      if (p.error.empty())
        o += fmt::format(",{},{},{}", p.top[j].first, tools::csv_field(name(p.top[j].first)), p.top[j].second);
      else o += ",,,";
    }
    for (int64_t c = 0; logits_ && c < classes_; ++c) o += p.error.empty() ? fmt::format(",{}", p.logits[c]) : ",";
    return o + "\n";
  }

  std::string end(int64_t errors) const {
    return text_ || !json_ ? "" : fmt::format("\n],\n\"errors\": {}}}\n", errors);
  }

 private:
  std::string name(int64_t c) const { return names_.empty() ? fmt::format("class {}", c) : names_[c]; }
  bool json_, text_;
  const std::vector<std::string>& names_;
  int64_t k_, classes_;
  bool logits_;
};

}  // namespace

int main(int argc, char** argv) {
  mo::tools::ensure_passive_omp_wait(argc, argv);
  std::string weights, model, classes_file, device = "auto", interp, output, precision = "fp32";
  std::vector<std::string> inputs;
  int64_t topk = 5, img_size = 0, batch = 32;
  double crop_pct = 0;
  bool json = false, with_logits = false, amp = false, use_ema = false;
  tools::Cli cli("mo_predict", "The top-k classes of images, with their probabilities.");
  CLI::App& app = cli.app;
  app.add_option("INPUT", inputs, "an image (JPEG, PNG, WebP), a folder (its images, recursively, sorted) or @LIST "
                 "(one path a line)")->type_name("PATH")->required();
  app.add_option("-w,--weights", weights, "checkpoint (ours, .pth, .safetensors or a --hf-dir folder)")
      ->type_name("FILE")->required();
  app.add_option("-m,--model", model, "model name where the file does not say (e.g. mambaout_femto, "
                 "vit_tiny_patch16_224)")->type_name("NAME");
  app.add_flag("--use-ema", use_ema, "the checkpoint's EMA weights (state_dict_ema) instead of the model's");
  app.add_option("--topk", topk, "classes listed per image")->capture_default_str()->check(tools::int_range(1));
  app.add_option("--classes", classes_file, "class names, one a line (default: the checkpoint's, or ImageNet's for "
                 "1000 classes)")->type_name("FILE");
  app.add_option("--img-size", img_size, "input size (default: the checkpoint's)")->check(tools::int_range(32, 8192));
  app.add_option("--crop-pct", crop_pct, "centre-crop fraction (default: the checkpoint's)")
      ->check(tools::number_range(1e-3, 1.0));
  app.add_option("--interpolation", interp, "resize (default: the checkpoint's)")
      ->type_name("NAME")
      ->check(tools::one_of({"bicubic", "bilinear"}));
  app.add_option("--device", device, "where to run")->capture_default_str()->check(tools::one_of({"auto", "cpu", "cuda"}));
  CLI::Option* prec = app.add_option("--precision", precision, "weights and activations")
      ->type_name("NAME")
      ->capture_default_str()
      ->check(tools::one_of({"fp32", "bf16"}));
  app.add_flag("--amp", amp, "the same as --precision bf16 (timm's name)")->excludes(prec);
  app.add_option("-b,--batch-size", batch, "images per model call")->capture_default_str()
      ->check(tools::int_range(1, 65536));
  app.add_flag("--json", json, "JSON on stdout instead of text");
  app.add_option("-o,--output", output, "also write the predictions to a file, JSON or CSV by the extension")
      ->type_name("FILE");
  app.add_flag("--logits", with_logits, "the raw logits of every class too");
  app.footer("Progress goes to stderr. An image that cannot be read or decoded is reported in its place in the\n"
             "output and the others are predicted; the exit status is then 1.\n" + app.get_footer());
  if (auto rc = cli.parse(argc, argv)) return *rc;
  if (amp) precision = "bf16";
  return cli.run([&] {
    const tools::ResultFormat file_format =
        output.empty() ? tools::ResultFormat::json : tools::result_format_of(output, "--output");
    const Device dev = tools::device_option(device);
    const DType dtype = precision == "bf16" ? DType::bf16 : DType::f32;
    MO_CHECK(dtype == DType::f32 || dev.is_cuda(), "--precision bf16 needs a GPU (the CPU kernels run fp32)");

    tools::LoadedModel m = tools::load_model_for_eval(weights, model, dev, dtype, use_ema ? "state_dict_ema" : "");
    const std::vector<std::string> names = tools::class_names_for(m, classes_file);
    const tools::EvalPreprocess pre = tools::eval_preprocess_for(m, img_size, crop_pct, interp);
    std::fprintf(stderr, "mo_predict: %s; preprocessing %s\n", m.summary.c_str(), pre.describe().c_str());
    const std::vector<std::string> images = tools::expand_image_inputs(inputs);
    const int64_t C = m.num_classes, k = std::min(topk, C);

    // Where the results go: stdout (text or JSON) and the --output file.
    const Writer out_writer(tools::ResultFormat::json, !json, names, k, C, with_logits);
    std::unique_ptr<tools::ResultFile> file;
    std::unique_ptr<Writer> file_writer;
    if (!output.empty()) {
      file = std::make_unique<tools::ResultFile>(output);
      file_writer = std::make_unique<Writer>(file_format, false, names, k, C, with_logits);
    }
    const bool to_stdout = output.empty() || json;
    auto emit = [&](auto&& part) {
      if (to_stdout) std::fputs(part(out_writer).c_str(), stdout);
      if (file) file->write(part(*file_writer));
    };
    emit([&](const Writer& w) { return w.begin(m.name, weights, pre); });

    NoGradGuard no_grad;
    const auto n = static_cast<int64_t>(images.size());
    int64_t errors = 0;
    const auto t0 = std::chrono::steady_clock::now();
    auto last_report = t0;
    for (int64_t b0 = 0; b0 < n; b0 += batch) {
      const std::vector<std::string> paths(images.begin() + b0, images.begin() + std::min(n, b0 + batch));
      std::vector<std::string> errs;
      Tensor x = tools::load_images(paths, pre.transform, dev, dtype, errs, pre.normalize);
      const std::vector<float> logits = m.model->forward_nhwc(x).to_vector<float>();
      for (size_t i = 0; i < paths.size(); ++i) {
        Prediction p{paths[i], errs[i], {}, {}};
        if (p.error.empty()) {
          p.logits.assign(logits.begin() + static_cast<int64_t>(i) * C, logits.begin() + static_cast<int64_t>(i + 1) * C);
          const std::vector<double> prob = tools::softmax(p.logits);
          for (int64_t c : tools::top_classes(prob, k)) p.top.push_back({c, prob[static_cast<size_t>(c)]});
        } else {
          ++errors;
          std::fprintf(stderr, "mo_predict: error: %s\n", p.error.c_str());
        }
        emit([&](const Writer& w) { return w.image(p, b0 + static_cast<int64_t>(i) == 0); });
      }
      std::fflush(stdout);
      const auto now = std::chrono::steady_clock::now();
      const int64_t done = b0 + static_cast<int64_t>(paths.size());
      if (n > batch && (done == n || now - last_report >= std::chrono::seconds(2))) {
        const double s = std::chrono::duration<double>(now - t0).count();
        std::fprintf(stderr, "mo_predict: %lld/%lld images, %.1f images/s\n", static_cast<long long>(done),
                     static_cast<long long>(n), static_cast<double>(done) / std::max(s, 1e-9));
        last_report = now;
      }
    }
    emit([&](const Writer& w) { return w.end(errors); });
    std::fflush(stdout);
    if (file) {
      file->commit();
      std::fprintf(stderr, "mo_predict: wrote %lld predictions to %s\n", static_cast<long long>(n), output.c_str());
    }
    if (errors > 0) {
      std::fprintf(stderr, "mo_predict: %lld of %lld images could not be read or decoded (reported in the output)\n",
                   static_cast<long long>(errors), static_cast<long long>(n));
      return 1;
    }
    return 0;
  });
}
