// weights.cpp: our checkpoint format as an nn/io format, the one call the tools use to load weights, and
// the class count a weight file implies.
#include "tools/engine/weights.h"

#include <cstring>
#include <mutex>

#include "nn/vit.h"
#include "tools/engine/checkpoint.h"
#include "tools/engine/model_info.h"
#include "tools/engine/train_config.h"

namespace mo::tools {

void register_mo_format() {
  static std::once_flag once;
  std::call_once(once, [] {
    register_pth_metadata();
    nn::io::register_format(
        {"mo",
         {".mo"},
         [](nn::io::Bytes head) { return head.size() >= 8 && std::memcmp(head.data(), "MOCKPT01", 8) == 0; },
         [](const std::string& path, const nn::io::ReadOptions& opt) {
           // The EMA's tensors only when they are asked for (or an unknown entry needs the list of them).
           const bool model = opt.entry.empty() || opt.entry == "state_dict" || opt.entry == "model";
           CheckpointState s = load_checkpoint(path, /*with_optimizer=*/false, /*with_ema=*/!model);
           nn::io::RawStateDict sd;
           for (const auto& [n, t] : checkpoint_entry(s, opt.entry, path))
             sd.tensors.emplace_back(n, nn::io::raw_from_tensor(t));
           if (!s.model_name.empty()) sd.metadata.emplace_back("arch", s.model_name);
           sd.metadata.emplace_back("epoch", std::to_string(s.epoch));
           // the facts a .mo carries, as the metadata other formats carry them (model_info.h)
           ModelInfo info;
           info.num_classes = classifier_rows(sd, path);
           info.class_names = s.class_names;
           if (!s.config_yaml.empty()) {
             TrainConfig c;
             make_schema(c).load_string(s.config_yaml, path + " (stored config)");
             info.img_size = c.data.img_size, info.crop_pct = c.data.crop_pct, info.interpolation = c.data.interpolation;
             if (nn::is_vit_name(c.model.name) || c.model.attention != "full")  // a causal model stays causal
               info.attention = c.model.attention;
           }
           const bool settings = !s.config_yaml.empty();  // weights-only .mo files have none
           for (const auto& [k, v] : info_to_metadata(info))
             if (settings || k == "label_names" || k == "num_classes") set_metadata(sd.metadata, k, v);
           return sd;
         },
         [](const nn::io::RawStateDict& sd, const std::string& path) {
           CheckpointState s;  // weights only: no optimizer state, so not resumable
           for (const auto& [k, v] : sd.metadata)
             if (k == "arch") s.model_name = v;
           // what the metadata says about the model: class names, and the eval settings as a stored config
           const CarriedInfo info = carried_info(sd.metadata, path);
           s.class_names = info.class_names;
           if (info.img_size || info.crop_pct || info.interpolation || info.attention) {
             const ModelInfo imagenet;
             MO_CHECK((!info.mean || *info.mean == imagenet.mean) && (!info.std || *info.std == imagenet.std),
                      "{}: mo checkpoints normalise with ImageNet's mean/std; these weights carry others", path);
             TrainConfig c;
             if (!s.model_name.empty()) c.model.name = s.model_name;
             if (!s.class_names.empty()) c.model.num_classes = static_cast<int64_t>(s.class_names.size());
             c.data.img_size = info.img_size.value_or(c.data.img_size);
             c.data.crop_pct = info.crop_pct.value_or(c.data.crop_pct);
             c.data.interpolation = info.interpolation.value_or(c.data.interpolation);
             c.model.attention = info.attention.value_or(c.model.attention);
             s.config_yaml = dump_train_config(c);
           }
           for (const auto& [n, t] : sd.tensors) s.model.emplace_back(n, nn::io::tensor_from_raw(t));
           save_checkpoint(path, s);
         }});
  });
}

// A model is built with as many classes as the weight has rows, so an empty weight ([2^40, 0] holds no bytes) is refused
// rather than trusted: rows x columns are then bounded by the file's bytes.
int64_t classifier_rows(const nn::io::RawStateDict& sd, const std::string& what) {
  for (const auto& [name, t] : sd.tensors) {
    std::string n = nn::io::strip_wrapper_prefix(name);
    if ((n == "head.fc2.weight" || n == "head.fc.weight" || n == "head.weight") && t.shape.size() == 2) {
      MO_CHECK(t.shape[1] > 0, "{}: classifier weight '{}' has shape {}, with no input features", what, name,
               nn::io::shape_string(t.shape));
      return t.shape[0];
    }
  }
  return 0;
}

nn::io::LoadReport load_weights(nn::Module& model, const std::string& path, bool strict,
                                const std::vector<std::string>& keep_if_shape_differs) {
  register_mo_format();
  nn::io::LoadOptions opt;
  opt.strict = strict;
  opt.keep_if_shape_differs = keep_if_shape_differs;
  return nn::io::load_into_model(model, path, opt);
}

}  // namespace mo::tools
