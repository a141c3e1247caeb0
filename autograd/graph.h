// graph.h: reverse-mode autograd. Ops record a Node holding their backward as a lambda right beside
// the forward (see ops/*), with edges to the nodes that made their inputs. backward() walks the graph
// in topological order, accumulating gradients; leaves receive them through AccumulateGrad.
// Saved tensors remember their version, so an in-place edit after saving is an error.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "autograd/tensor.h"

namespace mo {

struct Edge {
  std::shared_ptr<Node> node;  // null: that input needs no gradient
  int input_nr = 0;
};

struct Node {
  std::string name;
  std::vector<Edge> next;  // one per op input, in order
  int num_outputs = 1;
  virtual ~Node() = default;
  // grads[i] is the gradient of output i (undefined if nothing flowed into it).
  // Returns one gradient per input (undefined where not needed).
  virtual std::vector<Tensor> apply(std::vector<Tensor>& grads) = 0;
};

using BackwardFn = std::function<std::vector<Tensor>(std::vector<Tensor>& grads)>;

struct LambdaNode : Node {
  BackwardFn fn;
  std::vector<Tensor> apply(std::vector<Tensor>& grads) override { return fn(grads); }
};

struct AccumulateGrad : Node {
  std::weak_ptr<TensorImpl> leaf;
  std::vector<Tensor> apply(std::vector<Tensor>& grads) override;
};

// Gradient mode (thread-local). NoGradGuard turns recording off within a scope.
bool grad_enabled();
struct NoGradGuard {
  bool prev;
  NoGradGuard();
  ~NoGradGuard();
};

// True when an op with these inputs must record a node.
bool any_requires_grad(std::initializer_list<const Tensor*> inputs);
bool any_requires_grad(const std::vector<Tensor>& inputs);

// Attach a backward node to `outputs` (made by an op from `inputs`). No-op when not needed.
void record(const char* op, const std::vector<Tensor>& inputs, const std::vector<Tensor*>& outputs, BackwardFn fn);

// A tensor saved for backward together with its version at save time.
class Saved {
 public:
  Saved() = default;
  Saved(const Tensor& t, const char* op) : t_(t), version_(t.defined() ? t.version() : 0), op_(op) {}
  const Tensor& get() const;
 private:
  Tensor t_;
  uint64_t version_ = 0;
  const char* op_ = "";
};

// Run backward from `root` (seed gradient `grad`, or ones for a one-element root).
void run_backward(const Tensor& root, const Tensor& grad);

// Backward profiling (MO_PROFILE_BACKWARD=1 or set_backward_profiling(true)): every node's apply is
// timed with device synchronisation around it and summed per node name; print_backward_profile()
// writes the table to stderr. Off by default (it serialises the GPU).
// Forward ops are timed too ("fwd <op>": the time since the previous op's record(); call
// profile_forward_mark() before the forward starts).
void set_backward_profiling(bool on);
void print_backward_profile();
void profile_forward_mark();

// Raw gradient accumulation used by the engine: dst += src, allocating dst when undefined.
void accumulate(Tensor& dst, const Tensor& src);

}  // namespace mo
