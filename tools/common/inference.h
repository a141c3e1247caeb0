// inference.h: what mo_validate, mo_predict, mo_serve and mo_convert share: building a model, MambaOut or
// ViT, from a weight file (our checkpoints or PyTorch's: the architecture from the file's metadata or
// --model, the class count from the classifier's shape, a ViT's attention mask from the metadata), putting
// it on a device in fp32 or bf16, and the eval transform of single
// image files (mambaout.md §4: resize the shorter side to size / crop_pct, centre crop, normalize).
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "data/normalize.h"
#include "data/transforms.h"
#include "nn/io/raw_tensor.h"
#include "nn/classifier.h"
#include "tools/engine/model_info.h"
#include "tools/engine/train_config.h"
#include "tools/engine/weights.h"

namespace mo::tools {

struct LoadedModel {
  std::unique_ptr<nn::Classifier> model;  // an nn::MambaOut or an nn::VisionTransformer
  std::string name;
  std::string attention = "full";           // a ViT's: full | causal (the file's metadata 'attention')
  int64_t num_classes = 0;
  std::vector<std::string> class_names;     // from our checkpoints (the training folder's classes)
  std::optional<TrainConfig> train_config;  // from our checkpoints
  CarriedInfo carried;                      // eval settings and class names from the file's metadata
  std::string summary;                      // one line on what was loaded
};

// `weights`: a file, or a folder written by mo_convert --hf-dir (config.json + model.safetensors).
// `model_name` empty: taken from the file (our manifest, or an 'arch' entry), else an error asking for
// --model. The model ends up in eval mode on `dev` with parameters in `dtype` (f32 or bf16). `entry`: the
// weights inside a training checkpoint (nn::io::ReadOptions; "state_dict_ema" for --use-ema), empty for
// the model's own.
LoadedModel load_model_for_eval(const std::string& weights, const std::string& model_name, Device dev, DType dtype,
                                const std::string& entry = "");
// The same from weights already read (`what` names them in errors); the model stays on the CPU in fp32.
LoadedModel model_from_state_dict(const nn::io::RawStateDict& sd, const std::string& what, const std::string& model_name);

// Throws unless `name` is a model make_classifier builds, naming `what` and listing the known names.
void check_model_name(const std::string& name, const std::string& what);
// The width of the features the classifier reads (MambaOut: dims[3]; ViT: embed_dim).
int64_t num_features(const nn::Classifier& model);

// Decodes and transforms image files into one channels-last batch (N, size, size, 3) in `dtype` on
// `dev`, normalized with `norm`'s mean/std (default ImageNet's). Throws naming a file that cannot be read or
// decoded.
Tensor load_images(const std::vector<std::string>& paths, const data::EvalTransformConfig& tf, Device dev,
                   DType dtype, const data::NormalizeSpec& norm = data::imagenet_normalize(DType::f32, true));
// The same for a batch that may hold bad files: one that cannot be read or decoded does not throw; its
// slot holds a black image and errors[i] ("cannot decode 'a.png': PNG: ...") says why (empty when fine).
Tensor load_images(const std::vector<std::string>& paths, const data::EvalTransformConfig& tf, Device dev,
                   DType dtype, std::vector<std::string>& errors,
                   const data::NormalizeSpec& norm = data::imagenet_normalize(DType::f32, true));

// The image files that mo_predict's inputs name, in order: anything but a folder as given (a missing file
// is reported when it is read, in its place); a folder: the image files under it (data::is_image_name:
// .jpg, .jpeg, .png, .webp), recursively, sorted by path; and "@LIST": the paths in the file LIST, one per
// line (relative to the current folder; blank lines and lines starting with '#' skipped), each expanded
// the same way. A folder without images, an unreadable list or an empty one: errors naming it.
std::vector<std::string> expand_image_inputs(const std::vector<std::string>& inputs);

// The eval preprocessing of a loaded model, as mo_predict, mo_validate and mo_serve apply it: image size,
// crop_pct and interpolation from the checkpoint's stored config, else from the file's metadata
// (model_info.h), else the config defaults (224, 1.0, bicubic; a ViT: its own size, the only one it
// takes); each override given (> 0, non-empty) replaces its value. Mean and std: the file's metadata,
// else ImageNet's.
struct EvalPreprocess {
  data::EvalTransformConfig transform;
  data::NormalizeSpec normalize;  // channels-last f32; mean/std in 0..255 units
  std::string interpolation;      // "bicubic" | "bilinear"
  std::array<double, 3> mean{0.485, 0.456, 0.406}, std{0.229, 0.224, 0.225};  // 0..1 units
  // of img_size, crop_pct, interpolation, mean/std: "option", "checkpoint", "file metadata" or "default"
  std::string origin[4];
  // "32 px (checkpoint), crop_pct 1 (checkpoint), bicubic (checkpoint), mean/std ImageNet (default)"
  std::string describe() const;
};
EvalPreprocess eval_preprocess_for(const LoadedModel& m, int64_t img_size = 0, double crop_pct = 0,
                                   const std::string& interpolation = "");

// The names of m's classes: `classes_file` when given, else the checkpoint's, else the ImageNet names
// for a 1000-class model, else none. A count that differs from the model's outputs is an error.
std::vector<std::string> class_names_for(const LoadedModel& m, const std::string& classes_file = "");

// Softmax of one row of logits, in double.
std::vector<double> softmax(const std::vector<float>& logits);
// The k most probable classes of one row of probabilities, most probable first; ties keep the lower
// index first (mo_predict and mo_serve list the same classes in the same order).
std::vector<int64_t> top_classes(const std::vector<double>& prob, int64_t k);

}  // namespace mo::tools
