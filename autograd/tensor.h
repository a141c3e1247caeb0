// tensor.h: the Tensor handle (shape, strides, storage offset, dtype, device) and its autograd
// metadata. A Tensor is a cheap shared handle; views share Storage (and its version counter).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "autograd/check.h"
#include "autograd/dtype.h"
#include "autograd/storage.h"

namespace mo {

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);
int64_t shape_numel(const Shape& s);
Shape contiguous_strides(const Shape& s);

struct Node;
class Tensor;

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape, strides;
  int64_t offset = 0;  // in elements
  DType dtype = DType::f32;
  bool requires_grad = false;
  std::shared_ptr<Node> grad_fn;  // null for leaves
  int output_nr = 0;
  std::shared_ptr<TensorImpl> grad;        // accumulated gradient (leaves that require grad)
  std::shared_ptr<Node> grad_accumulator;  // lazily made AccumulateGrad node for leaves
  bool retain_grad = false;
  // Called after backward has accumulated into `grad` (used by dist/ to launch bucket all-reduces
  // as soon as a parameter's gradient is ready).
  std::vector<std::function<void(TensorImpl&)>> post_accumulate_hooks;
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // --- factories -------------------------------------------------------------
  static Tensor empty(const Shape& shape, DType dtype = DType::f32, Device dev = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dtype = DType::f32, Device dev = Device::cpu());
  static Tensor full(const Shape& shape, double value, DType dtype = DType::f32, Device dev = Device::cpu());
  template <typename T>
  static Tensor from_vector(const std::vector<T>& v, const Shape& shape, Device dev = Device::cpu());
  // Wrap external memory (not owned, not freed).
  static Tensor from_blob(void* data, const Shape& shape, DType dtype, Device dev = Device::cpu());

  // --- metadata --------------------------------------------------------------
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl_->shape; }
  int64_t size(int64_t d) const;
  const Shape& strides() const { return impl_->strides; }
  int64_t dim() const { return static_cast<int64_t>(impl_->shape.size()); }
  int64_t numel() const { return shape_numel(impl_->shape); }
  DType dtype() const { return impl_->dtype; }
  Device device() const { return impl_->storage->device; }
  bool is_cuda() const { return device().is_cuda(); }
  bool is_contiguous() const;
  int64_t offset() const { return impl_->offset; }
  size_t nbytes() const { return numel() * dtype_size(dtype()); }
  std::string str() const;  // "float32[2, 3] cpu"
  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  const std::shared_ptr<Storage>& storage() const { return impl_->storage; }
  bool same(const Tensor& o) const { return impl_ == o.impl_; }

  // Raw pointer to element 0 (storage data + offset). Checks the dtype.
  template <typename T> T* data() const;
  void* raw_data() const;

  // --- views and copies (no autograd; ops/ has the differentiable versions) ---
  Tensor view(const Shape& shape) const;  // contiguous only; one dim may be -1
  Tensor as_strided(const Shape& shape, const Shape& strides, int64_t offset) const;
  Tensor contiguous() const;  // self if already contiguous
  Tensor clone() const;
  Tensor to(Device dev) const;
  Tensor to(DType dt) const;
  Tensor cpu() const { return to(Device::cpu()); }
  Tensor detach() const;     // same storage, no grad_fn, requires_grad false
  void copy_(const Tensor& src);  // any dtype/device into self (same shape); bumps version
  void zero_();
  void fill_(double v);
  void add_(const Tensor& src, double alpha = 1.0);  // self += alpha * src (same shape)
  double item() const;  // one-element tensor to double
  template <typename T> std::vector<T> to_vector() const;  // any layout, any device

  // --- autograd ----------------------------------------------------------------
  bool requires_grad() const { return impl_ && impl_->requires_grad; }
  Tensor& requires_grad_(bool r = true);
  Tensor grad() const { return impl_->grad ? Tensor(impl_->grad) : Tensor(); }
  void set_grad(const Tensor& g) { impl_->grad = g.impl_; }
  const std::shared_ptr<Node>& grad_fn() const { return impl_->grad_fn; }
  bool is_leaf() const { return impl_->grad_fn == nullptr; }
  void backward(const Tensor& grad = Tensor()) const;
  uint64_t version() const { return impl_->storage->version.load(); }
  void bump_version() const { impl_->storage->version.fetch_add(1); }

 private:
  std::shared_ptr<TensorImpl> impl_;
};


template <typename T>
T* Tensor::data() const {
  MO_CHECK(dtype_of<T>::value == dtype(), "Tensor::data: requested {} but tensor is {}", dtype_name(dtype_of<T>::value),
           str());
  return static_cast<T*>(impl_->storage->data) + impl_->offset;
}

template <typename T>
Tensor Tensor::from_vector(const std::vector<T>& v, const Shape& shape, Device dev) {
  MO_CHECK(static_cast<int64_t>(v.size()) == shape_numel(shape), "from_vector: {} values for shape {}", v.size(),
           shape_str(shape));
  Tensor t = empty(shape, dtype_of<T>::value, Device::cpu());
  if (!v.empty()) std::memcpy(t.raw_data(), v.data(), v.size() * sizeof(T));
  return dev.is_cpu() ? t : t.to(dev);
}

template <typename T>
std::vector<T> Tensor::to_vector() const {
  Tensor c = to(Device::cpu()).to(dtype_of<T>::value).contiguous();
  std::vector<T> out(c.numel());
  if (!out.empty()) std::memcpy(out.data(), c.raw_data(), out.size() * sizeof(T));
  return out;
}

}  // namespace mo
