// module.cpp: parameter registry, traversal, and the contiguous parameter arena.
#include "nn/module.h"

namespace mo::nn {

Tensor& Module::register_parameter(const std::string& name, Tensor t) {
  t.requires_grad_(true);
  params_.emplace_back(name, std::move(t));
  return params_.back().second;
}

std::vector<std::pair<std::string, Tensor>> Module::named_parameters(const std::string& prefix) const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (auto& [n, t] : params_) out.emplace_back(prefix + n, t);
  for (auto& [n, c] : children_) {
    auto sub = c->named_parameters(prefix + n + ".");
    out.insert(out.end(), sub.begin(), sub.end());
  }
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [n, t] : named_parameters()) out.push_back(t);
  return out;
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (auto& [name, t] : named_parameters()) n += t.numel();
  return n;
}

Tensor Module::parameter(const std::string& name) const {
  for (auto& [n, t] : named_parameters())
    if (n == name) return t;
  MO_FAIL("no parameter named '{}' in this model", name);
}

void Module::set_parameter(const std::string& name, const Tensor& value) {
  Tensor p = parameter(name);
  MO_CHECK(p.shape() == value.shape(), "parameter '{}': model expects shape {} but got {}", name,
           shape_str(p.shape()), shape_str(value.shape()));
  p.copy_(value);
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [n, c] : children_) c->train(on);
}

void Module::visit(const std::function<void(const std::string&, const Module&)>& f, const std::string& prefix) const {
  f(prefix, *this);
  for (auto& [n, c] : children_) c->visit(f, prefix.empty() ? n : prefix + "." + n);
}


Tensor pack_parameters(Module& m, Device dev, DType dtype) {
  // Gather pointers to every parameter slot, depth first (the named_parameters order).
  std::vector<Tensor*> slots;
  std::function<void(Module&)> walk = [&](Module& mod) {
    for (auto& [n, t] : mod.params_) slots.push_back(&t);
    for (auto& [n, c] : mod.children_) walk(*c);
  };
  walk(m);
  int64_t total = 0;
  for (auto* t : slots) total += t->numel();
  Tensor flat = Tensor::empty({total}, dtype, dev);
  int64_t off = 0;
  for (auto* t : slots) {
    Tensor v = flat.as_strided(t->shape(), contiguous_strides(t->shape()), off);
    v.copy_(*t);
    v.requires_grad_(true);
    *t = v;
    off += v.numel();
  }
  return flat;
}

}  // namespace mo::nn
