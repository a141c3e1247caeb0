// module.h: Module, the base of every layer: named parameters in registration order (so names and
// order match the reference PyTorch state_dict), child modules, train/eval mode, and a visitor used
// by mo_flops to walk the model. Parameters can be packed into one contiguous arena (pack_parameters),
// so that all-reduce buckets, the optimizer and checkpoints work on flat buffers.
// A parameter may be stored wider than its reference (PyTorch) shape, with zero padding (Padding below);
// whatever leaves the model (state_dicts, checkpoints, parameter counts) goes through to_reference /
// from_reference and sees the reference layout only.
#pragma once
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "autograd/tensor.h"

namespace mo::nn {

// How a padded parameter's stored layout maps to its reference layout: along axis `dim`, each run holds
// reference indices [ref, ref + len) at stored indices [at, at + len). Stored indices no run covers are
// padding: zero from construction on, and the owner guarantees they stay zero (their gradients are
// exactly zero; GatedCNNBlock in mambaout.cpp says why).
struct Padding {
  struct Run {
    int64_t ref, at, len;
  };
  int64_t dim = 0;
  std::vector<Run> runs;
  Shape reference_shape, stored_shape;  // filled in by Module::pad_parameter
};

class Module {
 public:
  virtual ~Module() = default;
  Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // Parameters with their full dotted names, in registration order (depth first), as stored (padded
  // where a Padding says so): what the optimizer, all-reduce and the forward pass work on.
  std::vector<std::pair<std::string, Tensor>> named_parameters(const std::string& prefix = "") const;
  std::vector<Tensor> parameters() const;
  // The same in the reference layout (padding removed, copies where padded): what state_dicts export.
  std::vector<std::pair<std::string, Tensor>> reference_parameters() const;
  // Number of parameters of the reference model (padding not counted): the count PyTorch/timm report.
  int64_t num_parameters() const;
  // Look a parameter up by its dotted name, as stored (throws naming the key if absent).
  Tensor parameter(const std::string& name) const;

  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }

  // Visit this module and its children depth first: f(dotted name, module).
  void visit(const std::function<void(const std::string&, const Module&)>& f, const std::string& prefix = "") const;
  virtual const char* type_name() const { return "Module"; }

  // Replace parameter `name` with `value`'s data (copy; keeps device/dtype of the parameter). `value` has
  // the stored shape or the reference shape; either way the pads of a padded parameter stay zero.
  void set_parameter(const std::string& name, const Tensor& value);

  // Layout mapping of parameter `name` (dotted); identity (the tensor itself) where it is not padded.
  // `stored` has the parameter's stored shape, `reference` its reference shape; any device and dtype
  // (the result keeps them). to_reference copies the runs out; from_reference returns zeros with the runs
  // filled in. Used for values and for optimizer state laid out like the parameter.
  const Padding* padding_of(const std::string& name) const;  // null where not padded
  Shape reference_shape(const std::string& name) const;
  Tensor to_reference(const std::string& name, const Tensor& stored) const;
  Tensor from_reference(const std::string& name, const Tensor& reference) const;

  // Store this module's parameter `name` (local name; its current value is in the reference layout)
  // padded to `stored_size` along p.dim, as p's runs say. Before packing, once per parameter.
  void pad_parameter(const std::string& name, Padding p, int64_t stored_size);

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
  std::vector<std::pair<std::string, Padding>> padding_;  // local parameter name -> its padding
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
