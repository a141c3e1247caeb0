// graph.cpp: the backward engine: dependency counting, a ready stack in deterministic order,
// per-node gradient buffers, and gradient accumulation into leaves.
#include "autograd/graph.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <unordered_map>
#include <unordered_set>

#include "autograd/cuda_allocator.h"
#include "autograd/tensor_cuda.h"

namespace mo {

namespace {
thread_local bool g_grad_enabled = true;
bool g_profile = std::getenv("MO_PROFILE_BACKWARD") != nullptr;
std::map<std::string, std::pair<double, int64_t>> g_profile_table;  // name -> (seconds, calls)
std::chrono::steady_clock::time_point g_last_mark;                  // forward: end of the previous op
// During run_backward, CUDA leaves' gradients that add into an existing float32 buffer (the optimizer's
// gradient arena) without hooks are collected here and added by one kernel at the end of the pass
// instead of one launch per parameter (172 for MambaOut).
thread_local bool g_defer_accumulate = false;
thread_local std::vector<std::pair<Tensor, Tensor>> g_pending_accumulate;  // (destination, gradient)
}

void profile_forward_mark() {
  cuda_synchronize();
  g_last_mark = std::chrono::steady_clock::now();
}

void set_backward_profiling(bool on) { g_profile = on; }
void print_backward_profile() {
  std::vector<std::pair<std::string, std::pair<double, int64_t>>> rows(g_profile_table.begin(), g_profile_table.end());
  std::sort(rows.begin(), rows.end(), [](auto& a, auto& b) { return a.second.first > b.second.first; });
  double total = 0;
  for (auto& r : rows) total += r.second.first;
  std::fprintf(stderr, "op profile (synchronised; %.1f ms in all):\n", total * 1e3);
  for (auto& [name, v] : rows)
    std::fprintf(stderr, "  %-28s %9.2f ms %7lld calls\n", name.c_str(), v.first * 1e3, static_cast<long long>(v.second));
  g_profile_table.clear();
}

bool grad_enabled() { return g_grad_enabled; }
NoGradGuard::NoGradGuard() : prev(g_grad_enabled) { g_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { g_grad_enabled = prev; }

bool any_requires_grad(std::initializer_list<const Tensor*> inputs) {
  if (!g_grad_enabled) return false;
  for (auto* t : inputs)
    if (t && t->defined() && t->requires_grad()) return true;
  return false;
}
bool any_requires_grad(const std::vector<Tensor>& inputs) {
  if (!g_grad_enabled) return false;
  for (auto& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

static std::shared_ptr<Node> grad_edge_node(const Tensor& t) {
  if (!t.defined() || !t.requires_grad()) return nullptr;
  if (t.grad_fn()) return t.grad_fn();
  TensorImpl* impl = t.impl();
  if (!impl->grad_accumulator) {
    auto acc = std::make_shared<AccumulateGrad>();
    acc->name = "AccumulateGrad";
    acc->leaf = t.impl_ptr();
    impl->grad_accumulator = acc;
  }
  return impl->grad_accumulator;
}

void record(const char* op, const std::vector<Tensor>& inputs, const std::vector<Tensor*>& outputs, BackwardFn fn) {
  if (g_profile) {  // every op calls record() once its output exists: time since the previous mark
    auto t0 = g_last_mark;
    profile_forward_mark();
    auto& e = g_profile_table[std::string("fwd ") + op];
    e.first += std::chrono::duration<double>(g_last_mark - t0).count();
    e.second++;
  }
  if (!any_requires_grad(inputs)) return;
  auto node = std::make_shared<LambdaNode>();
  node->name = op;
  node->fn = std::move(fn);
  node->num_outputs = static_cast<int>(outputs.size());
  node->next.reserve(inputs.size());
  for (auto& t : inputs) {
    Edge e;
    e.node = grad_edge_node(t);
    e.input_nr = t.defined() && t.grad_fn() ? t.impl()->output_nr : 0;
    node->next.push_back(e);
  }
  for (size_t i = 0; i < outputs.size(); ++i) {
    TensorImpl* o = outputs[i]->impl();
    o->requires_grad = true;
    o->grad_fn = node;
    o->output_nr = static_cast<int>(i);
  }
}

const Tensor& Saved::get() const {
  if (t_.defined() && t_.version() != version_) {
    MO_FAIL(
        "{}: a tensor saved for backward ({}) was modified in place after it was saved "
        "(version {} -> {}); its gradient would be wrong",
        op_, t_.str(), version_, t_.version());
  }
  return t_;
}

std::vector<Tensor> AccumulateGrad::apply(std::vector<Tensor>& grads) {
  auto impl = leaf.lock();
  if (impl && grads[0].defined()) {
    Tensor g = grads[0];
    if (g_defer_accumulate && impl->grad && impl->post_accumulate_hooks.empty()) {
      Tensor cur(impl->grad);
      auto& pend = g_pending_accumulate;
      if (cur.is_cuda() && g.is_cuda() && cur.dtype() == DType::f32 && cur.is_contiguous() &&
          (g.dtype() == DType::bf16 || g.dtype() == DType::f32) && g.shape() == cur.shape() &&
          (pend.empty() || pend[0].first.device() == cur.device())) {
        // a leaf reached twice in one pass: add what is pending first, so the sums keep their order
        for (auto& p : pend)
          if (p.first.raw_data() == cur.raw_data()) {
            cuda_accumulate_many(pend);
            pend.clear();
            break;
          }
        pend.emplace_back(cur, g.contiguous());
        return {};
      }
    }
    if (!impl->grad) {
      // Own a fresh buffer so later accumulation never writes into a tensor an op still uses.
      Tensor fresh = g.clone();
      impl->grad = fresh.impl_ptr();
    } else {
      Tensor cur(impl->grad);
      cur.add_(g);
    }
    for (auto& h : impl->post_accumulate_hooks) h(*impl);
  }
  return {};
}

void accumulate(Tensor& dst, const Tensor& src) {
  if (!src.defined()) return;
  if (!dst.defined()) {
    dst = src;
    return;
  }
  // dst may alias a tensor held elsewhere (a gradient passed straight through): add in place only into a
  // buffer nothing else references (the usual case, the residual stream's gradient), else into src if that
  // one is private, else into a copy. a + b == b + a exactly, so the result does not depend on the choice.
  auto private_buffer = [](const Tensor& t) {
    return t.impl_ptr().use_count() == 1 && t.storage().use_count() == 1 && t.is_contiguous();
  };
  if (private_buffer(dst) && dst.dtype() == src.dtype()) {
    dst.add_(src);
  } else if (private_buffer(src) && src.dtype() == dst.dtype() && src.shape() == dst.shape()) {
    Tensor s = src;
    s.add_(dst);
    dst = s;
  } else {
    Tensor sum = dst.clone();
    sum.add_(src);
    dst = sum;
  }
}

void run_backward(const Tensor& root, const Tensor& grad_in) {
  MO_CHECK(root.defined() && root.requires_grad(), "backward: tensor {} does not require grad",
           root.defined() ? root.str() : "undefined");
  Tensor grad = grad_in;
  if (!grad.defined()) {
    MO_CHECK(root.numel() == 1, "backward: a gradient must be given for non-scalar {}", root.str());
    grad = Tensor::full(root.shape(), 1.0, root.dtype(), root.device());
  }
  MO_CHECK(grad.shape() == root.shape(), "backward: gradient {} does not match {}", grad.str(), root.str());
  NoGradGuard no_grad;

  std::shared_ptr<Node> start = root.grad_fn();
  if (!start) {  // a leaf
    Tensor r = root;
    auto impl = r.impl();
    if (!impl->grad) impl->grad = grad.clone().impl_ptr();
    else Tensor(impl->grad).add_(grad);
    return;
  }

  // Count dependencies (incoming edges) of every reachable node.
  std::unordered_map<Node*, int> deps;
  std::unordered_set<Node*> seen;
  std::vector<Node*> stack{start.get()};
  seen.insert(start.get());
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    for (auto& e : n->next) {
      if (!e.node) continue;
      deps[e.node.get()]++;
      if (seen.insert(e.node.get()).second) stack.push_back(e.node.get());
    }
  }

  // Deferred leaf accumulation for this pass (see g_pending_accumulate); dropped if the pass throws.
  struct DeferGuard {
    DeferGuard() {
      g_pending_accumulate.clear();
      g_defer_accumulate = true;
    }
    ~DeferGuard() {
      g_defer_accumulate = false;
      g_pending_accumulate.clear();
    }
  } defer;
  std::unordered_map<Node*, std::vector<Tensor>> buffers;
  buffers[start.get()].resize(start->num_outputs);
  buffers[start.get()][root.impl()->output_nr] = grad;
  std::vector<std::shared_ptr<Node>> ready{start};
  while (!ready.empty()) {
    std::shared_ptr<Node> n = ready.back();
    ready.pop_back();
    std::vector<Tensor> grads = std::move(buffers[n.get()]);
    buffers.erase(n.get());
    grads.resize(n->num_outputs);
    std::vector<Tensor> in_grads;
    if (g_profile) {
      cuda_synchronize();
      auto t0 = std::chrono::steady_clock::now();
      in_grads = n->apply(grads);
      cuda_synchronize();
      auto& e = g_profile_table[n->name];
      e.first += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      e.second++;
    } else {
      in_grads = n->apply(grads);
    }
    grads.clear();
    MO_ASSERT(in_grads.empty() || in_grads.size() == n->next.size());
    for (size_t i = 0; i < n->next.size(); ++i) {
      const Edge& e = n->next[i];
      if (!e.node) continue;
      auto& buf = buffers[e.node.get()];
      if (buf.empty()) buf.resize(e.node->num_outputs);
      if (i < in_grads.size() && in_grads[i].defined()) accumulate(buf[e.input_nr], in_grads[i]);
      if (--deps[e.node.get()] == 0) ready.push_back(e.node);
    }
  }
  if (!g_pending_accumulate.empty()) {
    auto t0 = std::chrono::steady_clock::now();
    cuda_accumulate_many(g_pending_accumulate);
    if (g_profile) {
      cuda_synchronize();
      auto& e = g_profile_table["AccumulateGrad (batched)"];
      e.first += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      e.second++;
    }
  }
}

}  // namespace mo
