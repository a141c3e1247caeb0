// classifier.h: what the training engine needs of an image classifier, whatever its family (MambaOut,
// ViT): the Module (parameters, train/eval), the forward pass on channels-last images, the drop-path key
// and the names of the classifier's parameters; make_classifier builds one by name.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "nn/module.h"

namespace mo::nn {

class Classifier : public Module {
 public:
  virtual Tensor forward_nhwc(const Tensor& x) const = 0;  // (B, H, W, 3) -> logits (B, classes)
  virtual void set_drop_path_key(uint64_t seed, uint64_t step) = 0;
  virtual std::vector<std::string> classifier_parameter_names() const = 0;
};

struct ClassifierSpec {
  std::string name;
  int64_t num_classes = 1000;
  double drop_path_rate = 0.0;
  std::string attention = "full";  // ViT only: full | causal
};

// A MambaOut (mambaout_names()) or a ViT (vit_names()); anything else is an error listing both.
std::unique_ptr<Classifier> make_classifier(const ClassifierSpec& s, uint64_t init_seed, bool initialize = true);

}  // namespace mo::nn
