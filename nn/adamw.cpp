// adamw.cpp: arenas, gradient views and the step (the kernel is ops/optim/adamw).
#include "nn/adamw.h"

namespace mo::nn {

bool decays(const std::string& name, const Tensor& p) {
  bool is_bias = name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
  bool vit_token = name == "pos_embed" || name == "cls_token";  // timm's VisionTransformer.no_weight_decay()
  return !(is_bias || vit_token || p.dim() <= 1);
}

AdamW::AdamW(Module& model, Device dev, DType compute, const AdamWOptions& opt)
    : model_(model), compute_(compute), opt_(opt) {
  MO_CHECK(compute == DType::f32 || compute == DType::bf16, "AdamW: compute dtype must be float32 or bfloat16, got {}",
           dtype_name(compute));
  // eps = 0 would turn a weight whose gradients are all 0 (the zero pads of padded parameters, a dead
  // unit) into 0/0 = NaN; with eps > 0 its update is exactly 0.
  MO_CHECK(opt.eps > 0, "AdamW: eps must be > 0, got {}", opt.eps);
  auto named = model.named_parameters();
  MO_CHECK(!named.empty(), "AdamW: the model has no parameters");
  int64_t off = 0;
  for (auto& [n, p] : named) {
    const Padding* pad = model.padding_of(n);
    slots_.push_back({n, off, p.numel(), p.shape(), decays(n, p), pad ? pad->reference_shape : p.shape()});
    off += p.numel();
  }
  // fp32 master first (from the fp32 initial values), then the compute copy
  Tensor flat32 = pack_parameters(model, dev, DType::f32);
  if (compute == DType::f32) {
    master_ = flat32;
    compute_flat_ = flat32;
  } else {
    master_ = flat32.clone();
    compute_flat_ = pack_parameters(model, dev, compute);
  }
  grads_ = Tensor::zeros({off}, DType::f32, dev);
  m_ = Tensor::zeros({off}, DType::f32, dev);
  v_ = Tensor::zeros({off}, DType::f32, dev);
  auto params = model.parameters();
  for (size_t i = 0; i < params.size(); ++i) {
    const Slot& s = slots_[i];
    params[i].set_grad(grads_.as_strided(s.shape, contiguous_strides(s.shape), s.offset));
  }
  // merge adjacent slots with the same decay flag into segments
  for (auto& s : slots_) {
    if (!segments_.empty() && segments_.back().decay == s.decay &&
        segments_.back().offset + segments_.back().numel == s.offset)
      segments_.back().numel += s.numel;
    else
      segments_.push_back({s.offset, s.numel, s.decay});
  }
}

void AdamW::zero_grad() { grads_.zero_(); }

void AdamW::step(double lr, double grad_scale, const Tensor& grad_coef, int64_t coef_index) {
  ++step_;
  AdamWHyper hp;
  hp.lr = lr;
  hp.beta1 = opt_.beta1;
  hp.beta2 = opt_.beta2;
  hp.eps = opt_.eps;
  hp.weight_decay = opt_.weight_decay;
  hp.step = step_;
  hp.grad_scale = grad_scale;
  adamw_step(master_, grads_, m_, v_, segments_, hp, compute_ == DType::bf16 ? compute_flat_ : Tensor(), grad_coef,
             coef_index);
  if (compute_ == DType::f32) master_.bump_version();
  else compute_flat_.bump_version();
}

Tensor AdamW::export_slot(const Tensor& flat, const Slot& s) const {
  return model_.to_reference(s.name, flat.as_strided(s.shape, contiguous_strides(s.shape), flat.offset() + s.offset));
}

void AdamW::import_slot(const Tensor& flat, const Slot& s, const Tensor& value) const {
  MO_CHECK(value.shape() == s.reference_shape, "'{}' has shape {} but the model's is {}", s.name,
           shape_str(value.shape()), shape_str(s.reference_shape));
  Tensor view = flat.as_strided(s.shape, contiguous_strides(s.shape), flat.offset() + s.offset);
  view.copy_(model_.from_reference(s.name, value));
}

void AdamW::sync_compute_weights() {
  if (compute_ != DType::f32) compute_flat_.copy_(master_);
}

}  // namespace mo::nn
