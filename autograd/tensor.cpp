// tensor.cpp: Tensor factories, views, copies and the raw (non-differentiable) in-place helpers used
// by the engine and the optimizer. CPU paths are here; CUDA paths call tensor_cuda.h (tensor_cuda.cu).
#include "autograd/tensor.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "autograd/graph.h"
#include "autograd/tensor_cuda.h"

namespace mo {

std::string shape_str(const Shape& s) { return fmt::format("[{}]", fmt::join(s, ", ")); }
int64_t shape_numel(const Shape& s) {
  uint64_t n = 1;  // unsigned: a shape with a 0 after dimensions whose product wraps is still 0
  for (auto d : s) n *= static_cast<uint64_t>(d);
  return static_cast<int64_t>(n);
}
Shape contiguous_strides(const Shape& s) {
  Shape st(s.size());
  int64_t acc = 1;
  for (int64_t i = static_cast<int64_t>(s.size()) - 1; i >= 0; --i) {
    st[i] = acc;
    acc *= s[i];
  }
  return st;
}

namespace {
// The bytes of a contiguous tensor of `shape`, refusing a negative dimension or a size past int64.
size_t shape_bytes(const char* what, const Shape& shape, DType dtype) {
  for (auto d : shape) MO_CHECK(d >= 0, "{}: negative dimension in shape {}", what, shape_str(shape));
  int64_t n = static_cast<int64_t>(dtype_size(dtype));
  if (std::find(shape.begin(), shape.end(), 0) != shape.end()) return 0;  // empty, whatever the other dims
  for (auto d : shape)
    MO_CHECK(!__builtin_mul_overflow(n, d, &n), "{}: shape {} of {} is more than 2^63 bytes", what, shape_str(shape),
             dtype_name(dtype));
  return static_cast<size_t>(n);
}
}  // namespace

Tensor Tensor::empty(const Shape& shape, DType dtype, Device dev) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(shape_bytes("empty", shape, dtype), dev);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(impl);
}
Tensor Tensor::zeros(const Shape& shape, DType dtype, Device dev) {
  Tensor t = empty(shape, dtype, dev);
  t.zero_();
  return t;
}
Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device dev) {
  Tensor t = empty(shape, dtype, dev);
  t.fill_(value);
  return t;
}
Tensor Tensor::from_blob(void* data, const Shape& shape, DType dtype, Device dev) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(data, shape_bytes("from_blob", shape, dtype), dev);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(impl);
}

int64_t Tensor::size(int64_t d) const {
  int64_t n = dim();
  if (d < 0) d += n;
  MO_CHECK(d >= 0 && d < n, "size: dim {} out of range for {}", d, str());
  return impl_->shape[d];
}

bool Tensor::is_contiguous() const {
  int64_t acc = 1;
  for (int64_t i = dim() - 1; i >= 0; --i) {
    if (impl_->shape[i] != 1 && impl_->strides[i] != acc) return false;
    acc *= impl_->shape[i];
  }
  return true;
}

std::string Tensor::str() const {
  if (!impl_) return "undefined";
  return fmt::format("{}{} {}", dtype_name(dtype()), shape_str(shape()), device().str());
}

void* Tensor::raw_data() const {
  return static_cast<char*>(impl_->storage->data) + impl_->offset * dtype_size(impl_->dtype);
}

Tensor Tensor::view(const Shape& shape_in) const {
  Shape shape = shape_in;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      MO_CHECK(infer < 0, "view: more than one -1 in {}", shape_str(shape_in));
      infer = static_cast<int64_t>(i);
    } else {
      known *= shape[i];
    }
  }
  if (infer >= 0) {
    MO_CHECK(known > 0 && numel() % known == 0, "view: cannot view {} as {}", str(), shape_str(shape_in));
    shape[infer] = numel() / known;
  }
  MO_CHECK(shape_numel(shape) == numel(), "view: cannot view {} as {}", str(), shape_str(shape_in));
  MO_CHECK(is_contiguous(), "view: {} is not contiguous; call contiguous() first", str());
  auto impl = std::make_shared<TensorImpl>(*impl_);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->grad_fn = nullptr;
  impl->requires_grad = false;
  impl->grad = nullptr;
  impl->grad_accumulator = nullptr;
  return Tensor(impl);
}

Tensor Tensor::as_strided(const Shape& shape, const Shape& strides, int64_t offset) const {
  MO_CHECK(shape.size() == strides.size(), "as_strided: shape {} and strides {} differ in rank", shape_str(shape),
           shape_str(strides));
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = impl_->storage;
  impl->shape = shape;
  impl->strides = strides;
  impl->offset = offset;
  impl->dtype = impl_->dtype;
  // bounds check against the storage
  int64_t max_off = offset;
  for (size_t i = 0; i < shape.size(); ++i)
    if (shape[i] > 0) max_off += (shape[i] - 1) * strides[i];
  MO_CHECK(shape_numel(shape) == 0 || (offset >= 0 && static_cast<size_t>(max_off + 1) * dtype_size(impl->dtype) <=
                                                         impl_->storage->nbytes),
           "as_strided: view {} strides {} offset {} exceeds storage of {} bytes", shape_str(shape),
           shape_str(strides), offset, impl_->storage->nbytes);
  return Tensor(impl);
}

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  Tensor t = empty(shape(), dtype(), device());
  t.copy_(*this);
  return t;
}
Tensor Tensor::clone() const {
  Tensor t = empty(shape(), dtype(), device());
  t.copy_(*this);
  return t;
}
Tensor Tensor::to(Device dev) const {
  if (dev == device()) return *this;
  Tensor t = empty(shape(), dtype(), dev);
  t.copy_(*this);
  return t;
}
Tensor Tensor::to(DType dt) const {
  if (dt == dtype()) return *this;
  Tensor t = empty(shape(), dt, device());
  t.copy_(*this);
  return t;
}
Tensor Tensor::detach() const {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = impl_->storage;
  impl->shape = impl_->shape;
  impl->strides = impl_->strides;
  impl->offset = impl_->offset;
  impl->dtype = impl_->dtype;
  return Tensor(impl);
}

Tensor& Tensor::requires_grad_(bool r) {
  MO_CHECK(!r || is_floating(dtype()), "requires_grad_: {} is not a floating type", str());
  MO_CHECK(is_leaf() || r, "requires_grad_: cannot turn it off on a non-leaf tensor");
  impl_->requires_grad = r;
  return *this;
}

void Tensor::backward(const Tensor& grad) const { run_backward(*this, grad); }

// --------------------------------------------------------------------------------------------
// CPU strided element loops

namespace {

template <typename F>
void for_each_index(const Shape& shape, F&& f) {
  // f(linear index, multi-index) for every element in row-major order.
  int64_t n = shape_numel(shape);
  int64_t nd = static_cast<int64_t>(shape.size());
  std::vector<int64_t> idx(nd, 0);
  for (int64_t lin = 0; lin < n; ++lin) {
    f(lin, idx);
    for (int64_t d = nd - 1; d >= 0; --d) {
      if (++idx[d] < shape[d]) break;
      idx[d] = 0;
    }
  }
}

int64_t offset_of(const std::vector<int64_t>& idx, const Shape& strides) {
  int64_t o = 0;
  for (size_t i = 0; i < idx.size(); ++i) o += idx[i] * strides[i];
  return o;
}

template <typename D, typename S>
D convert(S v) {
  if constexpr (std::is_same_v<D, bf16_t>) return bf16_t(static_cast<float>(v));
  else if constexpr (std::is_same_v<S, bf16_t>) return static_cast<D>(static_cast<float>(v));
  else return static_cast<D>(v);
}

template <typename F>
void dispatch_all(DType t, F&& f) {
  switch (t) {
    case DType::f32: f(float{}); break;
    case DType::f64: f(double{}); break;
    case DType::bf16: f(bf16_t{}); break;
    case DType::i64: f(int64_t{}); break;
    case DType::u8: f(uint8_t{}); break;
  }
}

template <typename D, typename S>
void copy_cpu(const Tensor& dst, const Tensor& src) {
  D* d = static_cast<D*>(dst.raw_data());
  const S* s = static_cast<const S*>(src.raw_data());
  int64_t n = dst.numel();
  if (dst.is_contiguous() && src.is_contiguous()) {
    if constexpr (std::is_same_v<D, S>) {
      std::memcpy(d, s, n * sizeof(D));
    } else {
#pragma omp parallel for if (n > 65536)
      for (int64_t i = 0; i < n; ++i) d[i] = convert<D>(s[i]);
    }
    return;
  }
  const Shape& ds = dst.strides();
  const Shape& ss = src.strides();
  for_each_index(dst.shape(), [&](int64_t, const std::vector<int64_t>& idx) {
    d[offset_of(idx, ds)] = convert<D>(s[offset_of(idx, ss)]);
  });
}

}  // namespace

void Tensor::copy_(const Tensor& src) {
  MO_CHECK(shape() == src.shape(), "copy_: shape mismatch, destination {} source {}", str(), src.str());
  bump_version();
  if (numel() == 0) return;
  if (device().is_cpu() && src.device().is_cpu()) {
    dispatch_all(dtype(), [&](auto d) {
      dispatch_all(src.dtype(), [&](auto s) { copy_cpu<decltype(d), decltype(s)>(*this, src); });
    });
    return;
  }
  cuda_copy(*this, src);
}

void Tensor::zero_() {
  bump_version();
  if (numel() == 0) return;
  if (device().is_cpu() && is_contiguous()) {
    std::memset(raw_data(), 0, nbytes());
    return;
  }
  fill_(0.0);
}

void Tensor::fill_(double v) {
  bump_version();
  if (numel() == 0) return;
  if (device().is_cuda()) {
    cuda_fill(*this, v);
    return;
  }
  dispatch_all(dtype(), [&](auto z) {
    using T = decltype(z);
    T* p = static_cast<T*>(raw_data());
    T val = convert<T>(v);
    for_each_index(shape(), [&](int64_t, const std::vector<int64_t>& idx) { p[offset_of(idx, strides())] = val; });
  });
}

void Tensor::add_(const Tensor& src, double alpha) {
  MO_CHECK(shape() == src.shape(), "add_: shape mismatch, destination {} source {}", str(), src.str());
  MO_CHECK(device() == src.device(), "add_: tensors on different devices: {} and {}", str(), src.str());
  bump_version();
  if (numel() == 0) return;
  if (device().is_cuda()) {
    cuda_add_(*this, src, alpha);
    return;
  }
  MO_CHECK(is_floating(dtype()), "add_: {} is not floating point", str());
  Tensor s = src.dtype() == dtype() ? src : src.to(dtype());
  dispatch_all(dtype(), [&](auto z) {
    using T = decltype(z);
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double> || std::is_same_v<T, bf16_t>) {
      T* d = static_cast<T*>(raw_data());
      const T* p = static_cast<const T*>(s.raw_data());
      if (is_contiguous() && s.is_contiguous()) {
        int64_t n = numel();
        using A = std::conditional_t<std::is_same_v<T, double>, double, float>;
#pragma omp parallel for if (n > 65536)
        for (int64_t i = 0; i < n; ++i) d[i] = convert<T>(static_cast<A>(d[i]) + static_cast<A>(alpha) * static_cast<A>(p[i]));
      } else {
        for_each_index(shape(), [&](int64_t, const std::vector<int64_t>& idx) {
          T& x = d[offset_of(idx, strides())];
          x = convert<T>(static_cast<double>(x) + alpha * static_cast<double>(p[offset_of(idx, s.strides())]));
        });
      }
    }
  });
}

double Tensor::item() const {
  MO_CHECK(numel() == 1, "item: {} has {} elements, expected 1", str(), numel());
  Tensor c = to(Device::cpu()).to(DType::f64);
  return *c.data<double>();
}


}  // namespace mo
