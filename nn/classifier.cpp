// classifier.cpp: make_classifier, the one place that maps a model name to its family.
#include "nn/classifier.h"

#include <algorithm>

#include "nn/mambaout.h"
#include "nn/vit.h"

namespace mo::nn {

std::unique_ptr<Classifier> make_classifier(const ClassifierSpec& s, uint64_t init_seed, bool initialize) {
  if (is_vit_name(s.name)) {
    VitConfig c = vit_config(s.name);
    c.num_classes = s.num_classes, c.drop_path_rate = s.drop_path_rate;
    c.causal = parse_attention_mode(s.attention);
    return std::make_unique<VisionTransformer>(c, init_seed, initialize);
  }
  const auto names = mambaout_names();
  if (std::find(names.begin(), names.end(), s.name) == names.end())
    MO_FAIL("unknown model '{}'; known: {}, {}", s.name, fmt::join(names, ", "), fmt::join(vit_names(), ", "));
  MO_CHECK(s.attention == "full", "model.attention: '{}' applies to ViT models only, not to {}", s.attention, s.name);
  MambaOutConfig c = mambaout_config(s.name);
  c.num_classes = s.num_classes, c.drop_path_rate = s.drop_path_rate;
  return std::make_unique<MambaOut>(c, init_seed, initialize);
}

}  // namespace mo::nn
