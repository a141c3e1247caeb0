// adamw.h: the AdamW optimizer with flat arenas and mixed precision.
//  - master weights: fp32, one contiguous buffer (the checkpointed truth);
//  - compute weights: the model's parameters, views of one buffer in the compute dtype (fp32: the
//    master buffer itself; bf16: a copy refreshed by every step);
//  - gradients: fp32, one contiguous buffer; each parameter's .grad is a view of it, so backward
//    accumulates straight into it (bf16 gradients are added into fp32), and all-reduce buckets are
//    slices of it;
//  - moments exp_avg / exp_avg_sq: fp32 buffers.
// Weight decay is decoupled and skipped for biases, every parameter with ndim ≤ 1 (LayerNorm,
// LayerScale) and a ViT's pos_embed and cls_token, as timm's param groups do.
// Padded parameters (Module::padding_of) need nothing special: their pads have zero gradients, so
// m = v = 0 there and the update p ← p·(1 − lr·wd) − lr·m̂/(√v̂ + ε) leaves p = 0.
#pragma once
#include <string>
#include <vector>

#include "nn/module.h"
#include "ops/optim/adamw.h"

namespace mo::nn {

struct AdamWOptions {
  double lr = 4e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.05;
};

// True when the parameter is decayed (timm: not a bias, ndim > 1, not a ViT's pos_embed or cls_token).
bool decays(const std::string& name, const Tensor& p);

class AdamW {
 public:
  // Packs `model`'s parameters onto `dev` in `compute` dtype (f32 or bf16). The model must not have
  // been packed before.
  AdamW(Module& model, Device dev, DType compute, const AdamWOptions& opt = {});

  void zero_grad();
  // One update with learning rate `lr`; gradients are multiplied by grad_scale first (e.g. 1/accum), and
  // by element `coef_index` of `grad_coef` when given (a clip coefficient on the device, ops/optim/grad_norm.h).
  void step(double lr, double grad_scale = 1.0, const Tensor& grad_coef = Tensor(), int64_t coef_index = 0);

  int64_t step_count() const { return step_; }
  void set_step_count(int64_t s) { step_ = s; }
  const AdamWOptions& options() const { return opt_; }
  AdamWOptions& options() { return opt_; }

  // Flat buffers (1-D, numel = number of parameters), for checkpoints and all-reduce.
  const Tensor& master() const { return master_; }
  const Tensor& grads() const { return grads_; }
  const Tensor& exp_avg() const { return m_; }
  const Tensor& exp_avg_sq() const { return v_; }
  // After master() was overwritten (loading a checkpoint), refresh the compute weights.
  void sync_compute_weights();
  // Per-parameter layout: name, offset in the flat buffers, shape (as stored: padded where the model pads).
  struct Slot {
    std::string name;
    int64_t offset, numel;
    Shape shape;
    bool decay;
    Shape reference_shape;  // the parameter's shape in PyTorch (= shape where not padded)
  };
  const std::vector<Slot>& slots() const { return slots_; }
  // Slot `s` of a flat buffer (master(), exp_avg(), exp_avg_sq()) in the reference layout (padding
  // removed; a view where there is none): what checkpoints store.
  Tensor export_slot(const Tensor& flat, const Slot& s) const;
  // The inverse: `value` (reference shape, any device) into slot `s` of `flat`; padding set to zero.
  void import_slot(const Tensor& flat, const Slot& s, const Tensor& value) const;
  DType compute_dtype() const { return compute_; }

 private:
  Module& model_;
  DType compute_;
  AdamWOptions opt_;
  Tensor master_, compute_flat_, grads_, m_, v_;
  std::vector<Slot> slots_;
  std::vector<AdamWSegment> segments_;
  int64_t step_ = 0;
};

}  // namespace mo::nn
