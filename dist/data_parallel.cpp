// data_parallel.cpp: the gradient arena, bucket assignment, the post-accumulate hooks that launch
// full buckets in order, and the end-of-step finish() of data_parallel.h.
#include "dist/data_parallel.h"

#include <algorithm>
#include <unordered_set>

namespace mo::dist {

namespace {

uint64_t fnv1a(const void* data, size_t n, uint64_t h = 1469598103934665603ull) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

struct Signature {
  int64_t count, numel;
  uint64_t hash;  // of the names and shapes
};

}  // namespace

struct DataParallel::Impl {
  std::shared_ptr<ProcessGroup> pg;
  std::vector<std::string> names;
  std::vector<Tensor> params;
  std::vector<int64_t> offsets;
  Tensor arena;               // (total,) gradients of every parameter, parameter order
  bool adopted = false;       // arena is the gradients' own buffer (e.g. nn::AdamW::grads())
  std::vector<Tensor> views;  // views[i]: the gradient of params[i] inside the arena
  std::vector<Bucket> buckets;
  std::vector<int> bucket_of;

  // State of the current step.
  bool sync = true;
  std::vector<char> fired;    // gradient seen in this step's synchronised backward
  std::vector<int> pending;   // per bucket: parameters still to fire
  std::vector<std::shared_ptr<Work>> works;
  int next_launch = 0;        // buckets [0, next_launch) are launched
  int64_t launched_in_backward = 0, launched_in_finish = 0;

  // Makes the gradient of parameter i the arena view, keeping its value (zero when it has none).
  void bind(int i, TensorImpl& p) {
    if (p.grad.get() == views[i].impl()) return;
    if (p.grad) {
      Tensor g(p.grad);
      if (g.storage() == arena.storage()) {  // another handle on the arena
        MO_CHECK(g.offset() == views[i].offset() && g.shape() == views[i].shape() && g.is_contiguous(),
                 "DataParallel: the gradient of '{}' points into the gradient arena at the wrong place", names[i]);
        views[i] = g;
        return;
      }
      MO_CHECK(g.storage()->nbytes == g.nbytes(),
               "DataParallel: the gradient of '{}' was re-bound to another shared buffer ({}) after DataParallel "
               "was made: create the optimizer before DataParallel so that its gradient arena is adopted",
               names[i], g.str());
      views[i].copy_(g);  // a private gradient made by backward after the gradients were reset
    } else {
      views[i].zero_();
    }
    p.grad = views[i].impl_ptr();
  }

  // Adopts the gradients' buffer when they already are views of one arena in parameter order.
  bool try_adopt(int64_t total) {
    Tensor g0 = params[0].grad();
    if (!g0.defined()) return false;
    for (size_t i = 0; i < params.size(); ++i) {
      Tensor g = params[i].grad();
      if (!g.defined() || g.storage() != g0.storage() || !g.is_contiguous() || g.dtype() != g0.dtype() ||
          g.offset() != g0.offset() + offsets[i] || g.shape() != params[i].shape())
        return false;
    }
    arena = g0.as_strided({total}, {1}, g0.offset());
    for (auto& p : params) views.push_back(p.grad());
    return true;
  }

  void on_grad(int i, TensorImpl& p) {
    int b = bucket_of[i];
    MO_CHECK(b >= next_launch,
             "DataParallel: parameter '{}' received a gradient while its bucket {} is being all-reduced: run one "
             "backward per step with sync on, use no_sync() for the accumulation micro-steps, and call finish() "
             "before the next step",
             names[i], b);
    bind(i, p);
    if (!sync) return;
    MO_CHECK(!fired[i],
             "DataParallel: parameter '{}' received a second gradient in one synchronised step: use no_sync() for "
             "every backward of a step but the last",
             names[i]);
    fired[i] = 1;
    if (--pending[b] == 0) launch_ready(true);
  }

  void launch(int b, bool from_hook) {
    const Bucket& k = buckets[b];
    Tensor slice = arena.as_strided({k.end - k.begin}, {1}, k.begin);
    double kib = static_cast<double>((k.end - k.begin) * dtype_size(arena.dtype())) / 1024;
    works.push_back(pg->all_reduce_async(
        slice, ReduceOp::avg, fmt::format("gradient bucket {} of {} ({:.1f} KiB)", b, buckets.size(), kib)));
    (from_hook ? launched_in_backward : launched_in_finish)++;
  }

  void launch_ready(bool from_hook) {
    while (next_launch < static_cast<int>(buckets.size()) && pending[next_launch] == 0) launch(next_launch++, from_hook);
  }

  void reset_step() {
    std::fill(fired.begin(), fired.end(), 0);
    for (size_t b = 0; b < buckets.size(); ++b) pending[b] = static_cast<int>(buckets[b].params.size());
    works.clear();
    next_launch = 0;
  }
};

DataParallel::DataParallel(std::shared_ptr<ProcessGroup> pg, const std::vector<std::pair<std::string, Tensor>>& params,
                           const DataParallelOptions& opts)
    : impl_(std::make_shared<Impl>()) {
  Impl& s = *impl_;
  MO_CHECK(pg != nullptr, "DataParallel: no process group (call dist::init() first)");
  MO_CHECK(!params.empty(), "DataParallel: the model has no parameters");
  MO_CHECK(opts.bucket_bytes > 0 && opts.first_bucket_bytes > 0, "DataParallel: bucket sizes must be positive");
  s.pg = std::move(pg);
  const Tensor& first = params.front().second;
  Signature sig{static_cast<int64_t>(params.size()), 0, 1469598103934665603ull};
  for (auto& [name, t] : params) {
    MO_CHECK(t.defined() && t.requires_grad(), "DataParallel: parameter '{}' does not require grad", name);
    MO_CHECK(t.dtype() == first.dtype() && t.device() == first.device(),
             "DataParallel: parameter '{}' is {} but '{}' is {}: all parameters need one dtype and device", name,
             t.str(), params.front().first, first.str());
    s.names.push_back(name);
    s.params.push_back(t);
    s.offsets.push_back(sig.numel);
    sig.numel += t.numel();
    sig.hash = fnv1a(name.data(), name.size(), sig.hash);
    sig.hash = fnv1a(t.shape().data(), t.shape().size() * sizeof(int64_t), sig.hash);
  }

  // Every rank must hold the same model.
  auto sigs = s.pg->all_gather(sig);
  for (int r = 1; r < s.pg->world_size(); ++r) {
    MO_CHECK(sigs[r].count == sigs[0].count && sigs[r].numel == sigs[0].numel,
             "DataParallel: rank {} has {} parameters ({} values) but rank 0 has {} ({}): every rank must build the "
             "same model",
             r, sigs[r].count, sigs[r].numel, sigs[0].count, sigs[0].numel);
    MO_CHECK(sigs[r].hash == sigs[0].hash,
             "DataParallel: parameter names or shapes differ between rank {} and rank 0: every rank must build the "
             "same model",
             r);
  }

  // Rank 0's initial values everywhere: one broadcast per distinct storage (one for a packed arena).
  if (opts.broadcast_parameters && s.pg->world_size() > 1) {
    std::vector<Tensor> all = s.params;
    all.insert(all.end(), opts.broadcast_also.begin(), opts.broadcast_also.end());
    std::unordered_set<const Storage*> seen;
    for (auto& t : all) {
      MO_CHECK(t.defined(), "DataParallel: an undefined tensor in broadcast_also");
      const auto& st = t.storage();
      if (!seen.insert(st.get()).second || st->nbytes == 0) continue;
      Tensor bytes = Tensor::from_blob(st->data, {static_cast<int64_t>(st->nbytes)}, DType::u8, st->device);
      s.pg->broadcast(bytes, 0);
      t.bump_version();
    }
  }

  // The gradient arena: adopted, or made here with the parameters' gradients bound to views of it.
  s.adopted = s.try_adopt(sig.numel);
  if (!s.adopted) {
    s.arena = Tensor::zeros({sig.numel}, first.dtype(), first.device());
    for (size_t i = 0; i < s.params.size(); ++i) {
      const Shape& sh = s.params[i].shape();
      s.views.push_back(s.arena.as_strided(sh, contiguous_strides(sh), s.offsets[i]));
      s.bind(static_cast<int>(i), *s.params[i].impl());
    }
  }
  MO_CHECK(is_floating(s.arena.dtype()), "DataParallel: gradients of dtype {} cannot be averaged",
           dtype_name(s.arena.dtype()));

  // Buckets in reverse parameter order; each is a contiguous range of the arena.
  s.bucket_of.assign(s.params.size(), -1);
  size_t esize = dtype_size(s.arena.dtype());
  Bucket cur;
  size_t cur_bytes = 0;
  for (int i = static_cast<int>(s.params.size()) - 1; i >= 0; --i) {
    if (cur.params.empty()) cur.end = s.offsets[i] + s.params[i].numel();
    cur.params.push_back(i);
    cur.begin = s.offsets[i];
    s.bucket_of[i] = static_cast<int>(s.buckets.size());
    cur_bytes += static_cast<size_t>(s.params[i].numel()) * esize;
    size_t cap = s.buckets.empty() ? opts.first_bucket_bytes : opts.bucket_bytes;
    if (cur_bytes >= cap || i == 0) {
      s.buckets.push_back(std::move(cur));
      cur = Bucket();
      cur_bytes = 0;
    }
  }
  s.fired.assign(s.params.size(), 0);
  s.pending.assign(s.buckets.size(), 0);
  s.reset_step();

  std::weak_ptr<Impl> weak = impl_;
  for (size_t i = 0; i < s.params.size(); ++i) {
    s.params[i].impl()->post_accumulate_hooks.push_back([weak, i](TensorImpl& p) {
      if (auto st = weak.lock()) st->on_grad(static_cast<int>(i), p);
    });
  }
}

DataParallel::~DataParallel() {
  // Collectives still in flight write into the arena: let them finish (the hooks die with impl_).
  for (auto& w : impl_->works) w->wait();
}

void DataParallel::set_sync(bool on) {
  MO_CHECK(on || impl_->next_launch == 0,
           "DataParallel: set_sync(false) while gradient buckets are being all-reduced: call finish() first");
  impl_->sync = on;
}
bool DataParallel::sync() const { return impl_->sync; }

void DataParallel::finish() {
  Impl& s = *impl_;
  for (int b = s.next_launch; b < static_cast<int>(s.buckets.size()); ++b) {
    for (int i : s.buckets[b].params)
      if (!s.fired[i]) s.bind(i, *s.params[i].impl());  // no gradient this step: zeros (or local sums)
    s.pending[b] = 0;
  }
  s.launch_ready(false);
  for (auto& w : s.works) w->wait();
  s.reset_step();
}

void DataParallel::zero_grad() {
  Impl& s = *impl_;
  MO_CHECK(s.next_launch == 0, "DataParallel: zero_grad() while gradient buckets are in flight: call finish() first");
  s.arena.zero_();
  for (size_t i = 0; i < s.params.size(); ++i) s.params[i].impl()->grad = s.views[i].impl_ptr();
  s.reset_step();
}

ProcessGroup& DataParallel::group() const { return *impl_->pg; }
Tensor DataParallel::grad_arena() const { return impl_->arena; }
bool DataParallel::adopted_arena() const { return impl_->adopted; }
int64_t DataParallel::offset(int param) const {
  MO_CHECK(param >= 0 && param < static_cast<int>(impl_->offsets.size()), "DataParallel: no parameter #{}", param);
  return impl_->offsets[param];
}
const std::vector<Bucket>& DataParallel::buckets() const { return impl_->buckets; }
int64_t DataParallel::buckets_launched_in_backward() const { return impl_->launched_in_backward; }
int64_t DataParallel::buckets_launched_in_finish() const { return impl_->launched_in_finish; }

void DataParallel::check_replicas() const {
  const Impl& s = *impl_;
  uint64_t h = 1469598103934665603ull;
  for (auto& t : s.params) {
    Tensor c = t.cpu().contiguous();
    h = fnv1a(c.raw_data(), c.nbytes(), h);
  }
  auto all = s.pg->all_gather(h);
  for (int r = 1; r < s.pg->world_size(); ++r)
    MO_CHECK(all[r] == all[0],
             "DataParallel: the parameters of rank {} differ from rank 0's (checksum {:016x} vs {:016x}): the "
             "replicas have diverged",
             r, all[r], all[0]);
}

}  // namespace mo::dist
