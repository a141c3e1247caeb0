// module.h: Module, the base of every layer: named parameters in registration order (so names and
// order match the reference PyTorch state_dict), child modules, train/eval mode, and a visitor used
// by mo_flops to walk the model. Parameters can be packed into one contiguous arena (pack_parameters),
// so that all-reduce buckets, the optimizer and checkpoints work on flat buffers.
#pragma once
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "autograd/tensor.h"

namespace mo::nn {

class Module {
 public:
  virtual ~Module() = default;
  Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // Parameters with their full dotted names, in registration order (depth first).
  std::vector<std::pair<std::string, Tensor>> named_parameters(const std::string& prefix = "") const;
  std::vector<Tensor> parameters() const;
  int64_t num_parameters() const;
  // Look a parameter up by its dotted name (throws naming the key if absent).
  Tensor parameter(const std::string& name) const;

  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }

  // Visit this module and its children depth first: f(dotted name, module).
  void visit(const std::function<void(const std::string&, const Module&)>& f, const std::string& prefix = "") const;
  virtual const char* type_name() const { return "Module"; }

  // Replace parameter `name` (same shape) with `value`'s data (copy; keeps device/dtype of the parameter).
  void set_parameter(const std::string& name, const Tensor& value);

 protected:
  Tensor& register_parameter(const std::string& name, Tensor t);
  template <typename M>
  M& register_module(const std::string& name, std::unique_ptr<M> m) {
    M& ref = *m;
    children_.emplace_back(name, std::move(m));
    return ref;
  }

 private:
  friend Tensor pack_parameters(Module& m, Device dev, DType dtype);
  std::deque<std::pair<std::string, Tensor>> params_;  // deque: references stay valid
  std::vector<std::pair<std::string, std::unique_ptr<Module>>> children_;
  bool training_ = true;
};

// A list of child modules named "0", "1", ... (PyTorch's nn.ModuleList).
class ModuleList : public Module {
 public:
  template <typename M>
  M& add(std::unique_ptr<M> m) {
    return register_module(std::to_string(size_++), std::move(m));
  }
  size_t size() const { return size_; }
  const char* type_name() const override { return "ModuleList"; }

 private:
  size_t size_ = 0;
};

// Move every parameter of `m` into one contiguous buffer on `dev` with `dtype` (values kept), each
// parameter becoming a view of it, in named_parameters() order. Returns the flat buffer (1-D).
Tensor pack_parameters(Module& m, Device dev, DType dtype = DType::f32);

}  // namespace mo::nn
