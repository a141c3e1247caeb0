// inference.cpp: model loading for evaluation and single-image preprocessing.
#include "tools/common/inference.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <numeric>
#include <sstream>

#include "data/image_decode.h"
#include "data/jpeg.h"
#include "data/normalize.h"
#include "nn/io/checkpoint_io.h"
#include "nn/mambaout.h"
#include "nn/vit.h"
#include "tools/common/class_names.h"
#include "tools/engine/checkpoint.h"
#include "tools/engine/weights.h"

namespace mo::tools {

LoadedModel model_from_state_dict(const nn::io::RawStateDict& sd, const std::string& what,
                                  const std::string& model_name) {
  LoadedModel out;
  out.name = model_name;
  if (out.name.empty())
    for (const auto& [k, v] : sd.metadata)
      if (k == "arch") out.name = v;
  MO_CHECK(!out.name.empty(), "'{}' does not say which model it holds: name it with --model (one of {}, {})", what,
           fmt::join(nn::mambaout_names(), ", "), fmt::join(nn::vit_names(), ", "));
  check_model_name(out.name, "'" + what + "'");
  out.num_classes = classifier_rows(sd, what);
  MO_CHECK(out.num_classes > 0, "'{}' has no classifier weight ({})", what,
           nn::is_vit_name(out.name) ? "head.weight" : "head.fc2.weight or head.fc.weight");
  out.carried = carried_info(sd.metadata, what);
  out.attention = out.carried.attention.value_or("full");
  MO_CHECK(out.attention == "full" || nn::is_vit_name(out.name),
           "'{}': metadata 'attention' = '{}' applies to ViT models only, not to {}", what, out.attention, out.name);
  out.model = nn::make_classifier({out.name, out.num_classes, 0.0, out.attention}, 0, /*initialize=*/false);
  nn::io::LoadReport rep = nn::io::load_into_model(*out.model, sd, what);
  out.class_names = out.carried.class_names;
  out.summary = fmt::format("{} ({} classes{}): {}", out.name, out.num_classes,
                            out.attention == "causal" ? ", causal attention" : "", rep.summary());
  out.model->eval();
  return out;
}

LoadedModel load_model_for_eval(const std::string& weights, const std::string& model_name, Device dev, DType dtype,
                                const std::string& entry) {
  register_mo_format();
  const bool hf_dir = is_hf_dir(weights);
  if (!entry.empty()) {  // a file of one flat state_dict has no entries (a pipe or folder fails below, named)
    const bool flat = hf_dir || (std::filesystem::is_regular_file(weights) &&
                                 nn::io::format_for_read(weights).name == "safetensors");
    MO_CHECK(!flat, "'{}' is {}, which holds one set of weights: it has no entry '{}' (training checkpoints, .mo "
             "or .pth, have one)", weights, hf_dir ? "a folder of one model.safetensors" : "a safetensors file", entry);
  }
  std::vector<std::string> class_names;
  std::optional<TrainConfig> train_config;
  if (is_mo_checkpoint(weights)) {
    CheckpointState h = read_checkpoint_header(weights);
    class_names = h.class_names;
    if (!h.config_yaml.empty()) {
      TrainConfig c;
      make_schema(c).load_string(h.config_yaml, weights + " (stored config)");
      train_config = c;
    }
  }
  nn::io::ReadOptions read;
  read.entry = entry;
  LoadedModel out = model_from_state_dict(hf_dir ? read_hf_dir(weights) : nn::io::read_checkpoint(weights, read),
                                          weights, model_name);
  if (!entry.empty()) out.summary += fmt::format(" (entry {})", entry);
  if (!class_names.empty()) out.class_names = class_names;
  out.train_config = train_config;
  nn::pack_parameters(*out.model, dev, dtype);
  out.model->eval();
  return out;
}

void check_model_name(const std::string& name, const std::string& what) {
  const auto m = nn::mambaout_names(), v = nn::vit_names();
  MO_CHECK(nn::is_vit_name(name) || std::find(m.begin(), m.end(), name) != m.end(),
           "{}: unknown model '{}'; known: {}, {}", what, name, fmt::join(m, ", "), fmt::join(v, ", "));
}

int64_t num_features(const nn::Classifier& model) {
  if (const auto* v = dynamic_cast<const nn::VisionTransformer*>(&model)) return v->config().embed_dim;
  return dynamic_cast<const nn::MambaOut&>(model).config().dims[3];
}

Tensor load_images(const std::vector<std::string>& paths, const data::EvalTransformConfig& tf, Device dev,
                   DType dtype, const data::NormalizeSpec& norm) {
  std::vector<std::string> errors;
  Tensor x = load_images(paths, tf, dev, dtype, errors, norm);
  for (const std::string& e : errors) MO_CHECK(e.empty(), "{}", e);
  return x;
}

Tensor load_images(const std::vector<std::string>& paths, const data::EvalTransformConfig& tf, Device dev,
                   DType dtype, std::vector<std::string>& errors, const data::NormalizeSpec& norm_in) {
  MO_CHECK(!paths.empty(), "no image files given");
  const int s = tf.size;
  const auto n = static_cast<int64_t>(paths.size());
  Tensor pixels = Tensor::empty({n, s, s, 3}, DType::u8);
  data::EvalTransform transform(tf);
  data::Workspace ws;
  std::vector<uint8_t> bytes;
  errors.assign(paths.size(), "");
  for (int64_t i = 0; i < n; ++i) {
    std::string err;
    uint8_t* slot = pixels.data<uint8_t>() + i * s * s * 3;
    data::ImageView view{slot, s, s, static_cast<int64_t>(s) * 3};
    if (!data::read_image_file(paths[i], bytes, err)) errors[i] = fmt::format("cannot read '{}': {}", paths[i], err);
    else if (!transform(bytes.data(), bytes.size(), ws, view, err))
      errors[i] = fmt::format("cannot decode '{}': {}", paths[i], err);
    if (!errors[i].empty()) std::memset(slot, 0, static_cast<size_t>(s) * s * 3);
  }
  Tensor meta = Tensor::zeros({n, data::kMetaCols}, DType::i64);  // no random erasing
  data::NormalizeSpec norm = norm_in;
  norm.dtype = DType::f32;
  norm.channels_last = true;
  Tensor x = data::normalize_erase(pixels, meta, 0, norm);
  if (dtype != DType::f32) x = x.to(dtype);
  return dev.is_cpu() ? x : x.to(dev);
}

EvalPreprocess eval_preprocess_for(const LoadedModel& m, int64_t img_size, double crop_pct,
                                   const std::string& interpolation) {
  const TrainConfig d;  // defaults
  const CarriedInfo& f = m.carried;
  const std::optional<TrainConfig>& c = m.train_config;
  EvalPreprocess p;
  // a ViT's position embedding fixes its input size: that is its default, and another size is an error
  const auto* vit = dynamic_cast<const nn::VisionTransformer*>(m.model.get());
  const int64_t size_default = vit ? vit->config().img_size : d.data.img_size;
  // each setting: the option, else the stored config, else the file's metadata, else the default
  auto pick = [&](auto option, bool given, auto stored, const auto& carried, auto dflt, std::string& origin) {
    if (given) return origin = "option", option;
    if (c) return origin = "checkpoint", stored;
    if (carried) return origin = "file metadata", static_cast<decltype(option)>(*carried);
    return origin = "default", dflt;
  };
  p.transform.size = static_cast<int>(
      pick(img_size, img_size > 0, c ? c->data.img_size : 0, f.img_size, size_default, p.origin[0]));
  MO_CHECK(!vit || p.transform.size == size_default, "{} takes {} px images only (its position embedding is fixed), "
           "not {} px ({})", m.name, size_default, p.transform.size,
           p.origin[0] == "option" ? "--img-size" : p.origin[0]);
  p.transform.crop_pct = pick(crop_pct, crop_pct > 0, c ? c->data.crop_pct : 0.0, f.crop_pct, d.data.crop_pct,
                              p.origin[1]);
  p.interpolation = pick(interpolation, !interpolation.empty(), c ? c->data.interpolation : std::string(),
                         f.interpolation, d.data.interpolation, p.origin[2]);
  MO_CHECK(p.interpolation == "bicubic" || p.interpolation == "bilinear",
           "--interpolation must be bicubic or bilinear, got '{}'", p.interpolation);
  p.transform.interpolation = p.interpolation == "bicubic" ? data::Interp::bicubic : data::Interp::bilinear;
  p.normalize = data::imagenet_normalize(DType::f32, /*channels_last=*/true);
  p.origin[3] = "default";
  if (f.mean && f.std) {
    p.origin[3] = "file metadata";
    if (*f.mean == p.mean && *f.std == p.std) return p;  // ImageNet's: the very same spec as the default
    p.mean = *f.mean, p.std = *f.std;
    for (int k = 0; k < 3; ++k) {
      p.normalize.mean[k] = static_cast<float>(p.mean[k] * 255.0);
      p.normalize.std[k] = static_cast<float>(p.std[k] * 255.0);
    }
  }
  return p;
}

std::string EvalPreprocess::describe() const {
  const bool imagenet = mean == EvalPreprocess{}.mean && std == EvalPreprocess{}.std;
  return fmt::format("{} px ({}), crop_pct {} ({}), {} ({}), mean/std {} ({})", transform.size, origin[0],
                     transform.crop_pct, origin[1], interpolation, origin[2],
                     imagenet ? std::string("ImageNet")
                              : fmt::format("{},{},{}/{},{},{}", mean[0], mean[1], mean[2], std[0], std[1], std[2]),
                     origin[3]);
}

std::vector<std::string> class_names_for(const LoadedModel& m, const std::string& classes_file) {
  std::vector<std::string> names = m.class_names;
  if (!classes_file.empty()) names = read_class_names(classes_file);
  else if (names.empty() && m.num_classes == 1000) names = read_class_names(find_imagenet_classes_file());
  MO_CHECK(names.empty() || static_cast<int64_t>(names.size()) == m.num_classes,
           "{} class names ({}) but the model has {} outputs", names.size(),
           classes_file.empty() ? "from the checkpoint" : "in '" + classes_file + "'", m.num_classes);
  return names;
}

std::vector<std::string> expand_image_inputs(const std::vector<std::string>& inputs) {
  namespace fs = std::filesystem;
  std::vector<std::string> out;
  auto add_path = [&](const std::string& p, const std::string& where) {
    std::error_code ec;
    if (!fs::is_directory(p, ec)) {  // a file, or a missing one: reading it says what is wrong, per image
      out.push_back(p);
      return;
    }
    std::vector<std::string> found;
    try {  // symbolic links to folders are not followed: a link loop cannot repeat files
      for (const fs::directory_entry& e : fs::recursive_directory_iterator(p))
        if (!e.is_directory() && data::is_image_name(e.path().filename().string())) found.push_back(e.path().string());
    } catch (const fs::filesystem_error& e) {
      MO_FAIL("cannot list the folder '{}'{}: {}", p, where, e.code().message());
    }
    MO_CHECK(!found.empty(), "the folder '{}'{} holds no image files (.jpg, .jpeg, .png, .webp)", p, where);
    std::sort(found.begin(), found.end());
    out.insert(out.end(), found.begin(), found.end());
  };
  for (const std::string& in : inputs) {
    if (in.size() < 2 || in[0] != '@') {
      add_path(in, "");
      continue;
    }
    const std::string list = in.substr(1);
    std::vector<uint8_t> bytes;
    std::string err;
    MO_CHECK(data::read_file(list, bytes, err), "cannot read the list file '{}': {}", list, err);
    std::istringstream lines(std::string(bytes.begin(), bytes.end()));
    std::string line;
    const size_t before = out.size();
    for (int64_t no = 1; std::getline(lines, line); ++no) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.empty() || line[0] == '#') continue;
      add_path(line, fmt::format(" (line {} of {})", no, list));
    }
    MO_CHECK(out.size() > before, "the list file '{}' names no images", list);
  }
  return out;
}

std::vector<int64_t> top_classes(const std::vector<double>& prob, int64_t k) {
  std::vector<int64_t> order(prob.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return prob[a] > prob[b]; });
  order.resize(static_cast<size_t>(std::clamp<int64_t>(k, 0, static_cast<int64_t>(order.size()))));
  return order;
}

std::vector<double> softmax(const std::vector<float>& logits) {
  double mx = -INFINITY, sum = 0;
  for (float z : logits) mx = std::max(mx, static_cast<double>(z));
  std::vector<double> p(logits.size());
  for (size_t i = 0; i < p.size(); ++i) sum += p[i] = std::exp(static_cast<double>(logits[i]) - mx);
  for (double& v : p) v /= sum;
  return p;
}

}  // namespace mo::tools
