// model_ema.cpp: the EMA buffer, its update, its evaluation model and its checkpoint form.
#include "tools/engine/model_ema.h"

#include "ops/optim/ema.h"

namespace mo::tools {

ModelEma::ModelEma(const nn::ClassifierSpec& mc, const nn::AdamW& opt, Device dev, DType compute, double decay,
                   bool warmup)
    : opt_(opt), decay_(decay), warmup_(warmup) {
  MO_CHECK(decay >= 0 && decay <= 1, "config key 'model_ema_decay': {} not in [0, 1]", decay);
  flat_ = opt.master().clone();
  model_ = nn::make_classifier(mc, 0);
  compute_ = pack_parameters(*model_, dev, compute);
  MO_ASSERT(compute_.numel() == flat_.numel());
  model_->eval();
}

double ModelEma::decay_for(int64_t step) const { return ema_decay_for_step(decay_, warmup_, step); }

void ModelEma::update(int64_t step) { ema_update(flat_, opt_.master(), decay_for(step)); }

nn::Classifier& ModelEma::eval_model() {
  compute_.copy_(flat_);
  return *model_;
}

std::vector<std::pair<std::string, Tensor>> ModelEma::export_state() const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (const auto& slot : opt_.slots()) out.emplace_back(slot.name, opt_.export_slot(flat_, slot));
  return out;
}

void ModelEma::import_state(const std::vector<std::pair<std::string, Tensor>>& ts, const std::string& path) {
  for (const auto& slot : opt_.slots()) {
    const Tensor* t = nullptr;
    for (const auto& [n, v] : ts)
      if (n == slot.name) t = &v;
    MO_CHECK(t != nullptr, "checkpoint '{}' lacks the EMA of parameter '{}' (saved without model_ema? set "
             "model_ema=false to resume it, or start the EMA afresh from another run)", path, slot.name);
    MO_CHECK(t->shape() == slot.reference_shape, "checkpoint '{}': the EMA of '{}' has shape {} but the model's is {}",
             path, slot.name, shape_str(t->shape()), shape_str(slot.reference_shape));
    opt_.import_slot(flat_, slot, *t);
  }
}

}  // namespace mo::tools
