// module.cpp: parameter registry, traversal, padded parameters, and the contiguous parameter arena.
#include "nn/module.h"

namespace mo::nn {

namespace {

// Indices [start, start + len) of axis `dim` of `t`, as a view.
Tensor narrow(const Tensor& t, int64_t dim, int64_t start, int64_t len) {
  Shape shape = t.shape();
  shape[static_cast<size_t>(dim)] = len;
  return t.as_strided(shape, t.strides(), t.offset() + start * t.strides()[static_cast<size_t>(dim)]);
}

}  // namespace

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

std::vector<std::pair<std::string, Tensor>> Module::reference_parameters() const {
  auto out = named_parameters();
  for (auto& [n, t] : out) t = to_reference(n, t);
  return out;
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (auto& [name, t] : named_parameters()) {
    const Padding* p = padding_of(name);
    n += p ? shape_numel(p->reference_shape) : t.numel();
  }
  return n;
}

Tensor Module::parameter(const std::string& name) const {
  for (auto& [n, t] : named_parameters())
    if (n == name) return t;
  MO_FAIL("no parameter named '{}' in this model", name);
}

void Module::set_parameter(const std::string& name, const Tensor& value) {
  Tensor p = parameter(name);
  if (p.shape() == value.shape()) {
    p.copy_(from_reference(name, to_reference(name, value)));  // pads, if any, stay zero
    return;
  }
  MO_CHECK(reference_shape(name) == value.shape(), "parameter '{}': model expects shape {} but got {}", name,
           shape_str(reference_shape(name)), shape_str(value.shape()));
  p.copy_(from_reference(name, value));
}

const Padding* Module::padding_of(const std::string& name) const {
  for (auto& [n, p] : padding_)
    if (n == name) return &p;
  for (auto& [n, c] : children_)
    if (name.size() > n.size() && name.compare(0, n.size(), n) == 0 && name[n.size()] == '.')
      return c->padding_of(name.substr(n.size() + 1));
  return nullptr;
}

Shape Module::reference_shape(const std::string& name) const {
  const Padding* p = padding_of(name);
  return p ? p->reference_shape : parameter(name).shape();
}

Tensor Module::to_reference(const std::string& name, const Tensor& stored) const {
  const Padding* p = padding_of(name);
  if (!p) return stored;
  MO_CHECK(stored.shape() == p->stored_shape, "parameter '{}': expected its stored shape {}, got {}", name,
           shape_str(p->stored_shape), shape_str(stored.shape()));
  Tensor src = stored.detach();
  Tensor out = Tensor::empty(p->reference_shape, stored.dtype(), stored.device());  // the runs cover it all
  for (const auto& r : p->runs) narrow(out, p->dim, r.ref, r.len).copy_(narrow(src, p->dim, r.at, r.len));
  return out;
}

Tensor Module::from_reference(const std::string& name, const Tensor& reference) const {
  const Padding* p = padding_of(name);
  if (!p) return reference;
  MO_CHECK(reference.shape() == p->reference_shape, "parameter '{}': expected its reference shape {}, got {}", name,
           shape_str(p->reference_shape), shape_str(reference.shape()));
  Tensor src = reference.detach();
  Tensor out = Tensor::zeros(p->stored_shape, reference.dtype(), reference.device());
  for (const auto& r : p->runs) narrow(out, p->dim, r.at, r.len).copy_(narrow(src, p->dim, r.ref, r.len));
  return out;
}

void Module::pad_parameter(const std::string& name, Padding p, int64_t stored_size) {
  Tensor* slot = nullptr;
  for (auto& [n, t] : params_)
    if (n == name) slot = &t;
  MO_CHECK(slot, "pad_parameter: no parameter '{}' in this {}", name, type_name());
  for (auto& [n, q] : padding_) MO_CHECK(n != name, "pad_parameter: '{}' is padded already", name);
  const Shape ref = slot->shape();
  MO_CHECK(p.dim >= 0 && p.dim < static_cast<int64_t>(ref.size()), "pad_parameter: '{}' {} has no axis {}", name,
           shape_str(ref), p.dim);
  const int64_t ref_size = ref[static_cast<size_t>(p.dim)];
  // The runs must cover the reference axis exactly once and land disjointly inside the stored axis.
  MO_CHECK(stored_size >= ref_size, "pad_parameter: '{}': stored size {} < reference size {}", name, stored_size,
           ref_size);
  std::vector<int> ref_hits(static_cast<size_t>(ref_size), 0), at_hits(static_cast<size_t>(stored_size), 0);
  for (const auto& r : p.runs) {
    MO_CHECK(r.len >= 0 && r.ref >= 0 && r.ref + r.len <= ref_size && r.at >= 0 && r.at + r.len <= stored_size,
             "pad_parameter: '{}': run [{}, +{}) -> [{}, +{}) leaves the axis ({} -> {})", name, r.ref, r.len, r.at,
             r.len, ref_size, stored_size);
    for (int64_t k = 0; k < r.len; ++k) {
      ++ref_hits[static_cast<size_t>(r.ref + k)];
      ++at_hits[static_cast<size_t>(r.at + k)];
    }
  }
  for (int h : ref_hits) MO_CHECK(h == 1, "pad_parameter: '{}': the runs do not cover the reference axis once", name);
  for (int h : at_hits) MO_CHECK(h <= 1, "pad_parameter: '{}': two runs overlap in the stored axis", name);
  p.reference_shape = ref;
  p.stored_shape = ref;
  p.stored_shape[static_cast<size_t>(p.dim)] = stored_size;
  padding_.emplace_back(name, std::move(p));
  Tensor padded = from_reference(name, *slot);
  padded.requires_grad_(true);
  *slot = padded;
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
