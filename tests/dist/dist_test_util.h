// dist_test_util.h: shared pieces of the dist/ tests: a small MLP built from ops (Linear, GELU,
// soft-target cross-entropy) with an optional parameter that gets no gradient, a fixed synthetic
// data set, and the main() of the MPI gtest programs (every rank runs the same tests in the same
// order; the job fails when any rank fails).
#pragma once
#include <gtest/gtest.h>
#ifdef MO_WITH_MPI
#include <mpi.h>
#endif

#include <memory>
#include <random>

#include "autograd/graph.h"
#include "dist/process_group.h"
#include "nn/layers.h"
#include "ops/activation/activation.h"
#include "ops/elementwise/elementwise.h"
#include "ops/loss/cross_entropy.h"
#include "tests/test_util.h"

namespace mo::test {

inline std::shared_ptr<dist::ProcessGroup> g_pg;  // the group of the MPI test programs

constexpr int64_t kIn = 6, kHidden = 16, kClasses = 4;

struct Mlp : nn::Module {
  nn::Linear *fc1, *fc2, *spare = nullptr;
  Mlp(uint64_t seed, bool with_spare = false) {
    nn::Init init{seed};
    fc1 = &register_module("fc1", std::make_unique<nn::Linear>(kIn, kHidden, init));
    fc2 = &register_module("fc2", std::make_unique<nn::Linear>(kHidden, kClasses, init));
    if (with_spare) spare = &register_module("spare", std::make_unique<nn::Linear>(kHidden, kClasses, init));
    // Larger weights than the reference init, so that a few steps move the parameters visibly.
    for (auto& [name, p] : named_parameters()) {
      Tensor v = randn(p.shape(), seed * 131 + p.numel(), DType::f32, 0.5);
      set_parameter(name, v);
    }
  }
  Tensor forward(const Tensor& x) const { return fc2->forward(gelu(fc1->forward(x))); }
};

// n samples: x (n, kIn) N(0,1), soft targets (n, kClasses) from labels with smoothing 0.1.
struct Data {
  Tensor x, target;
  explicit Data(int64_t n, uint64_t seed = 7) {
    x = randn({n, kIn}, seed);
    std::mt19937_64 g(seed);
    std::vector<int64_t> labels(n);
    for (auto& l : labels) l = static_cast<int64_t>(g() % kClasses);
    target = smooth_one_hot(Tensor::from_vector(labels, {n}), kClasses, 0.1);
  }
  // Rows [begin, begin + count) as contiguous tensors on `dev`.
  std::pair<Tensor, Tensor> rows(int64_t begin, int64_t count, Device dev = Device::cpu()) const {
    Tensor xs = x.as_strided({count, kIn}, {kIn, 1}, begin * kIn).contiguous().clone();
    Tensor ts = target.as_strided({count, kClasses}, {kClasses, 1}, begin * kClasses).contiguous().clone();
    return {xs.to(dev), ts.to(dev)};
  }
};

// Mean soft-target cross-entropy of a micro-batch, divided by the accumulation steps.
inline Tensor micro_loss(const Mlp& m, const std::pair<Tensor, Tensor>& batch, int64_t accum) {
  return scale(soft_target_cross_entropy(m.forward(batch.first), batch.second), 1.0 / static_cast<double>(accum));
}

// Plain SGD with momentum over every parameter (CPU, fp32); `mom` holds one buffer per parameter.
inline void sgd_step(nn::Module& m, std::vector<Tensor>& mom, double lr, double momentum) {
  auto ps = m.parameters();
  if (mom.empty())
    for (auto& p : ps) mom.push_back(Tensor::zeros(p.shape()));
  NoGradGuard ng;
  for (size_t i = 0; i < ps.size(); ++i) {
    Tensor g = ps[i].grad().cpu().contiguous();
    float* v = mom[i].data<float>();
    Tensor pc = ps[i].cpu().contiguous();
    float* w = pc.data<float>();
    const float* gd = g.data<float>();
    for (int64_t j = 0; j < ps[i].numel(); ++j) {
      v[j] = static_cast<float>(momentum) * v[j] + gd[j];
      w[j] -= static_cast<float>(lr) * v[j];
    }
    Tensor(ps[i]).copy_(pc);
  }
}

// All parameters of a module as one flat CPU float vector.
inline std::vector<float> flat_params(const nn::Module& m) {
  std::vector<float> out;
  for (auto& p : m.parameters()) {
    auto v = p.to_vector<float>();
    out.insert(out.end(), v.begin(), v.end());
  }
  return out;
}

inline double max_rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double scale = 1e-6, diff = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    scale = std::max(scale, static_cast<double>(std::abs(b[i])));
    diff = std::max(diff, static_cast<double>(std::abs(a[i] - b[i])));
  }
  return diff / scale;
}

#ifdef MO_WITH_MPI
// main() of an MPI gtest program. `own_mpi`: the program initialises MPI itself (dist::init then
// adopts it) instead of leaving it to dist::init.
inline int run_mpi_gtest(int argc, char** argv, bool own_mpi, bool use_gpu = false) {
  if (own_mpi) {
    int provided = 0;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  }
  ::testing::InitGoogleTest(&argc, argv);
  dist::InitOptions o;
  o.timeout_s = 120;
  o.heartbeat_timeout_s = 60;
  o.use_gpu = use_gpu;
  g_pg = dist::init(o);
  int rc = RUN_ALL_TESTS();
  int64_t failed = g_pg->all_reduce_sum(std::vector<int64_t>{rc != 0 ? 1 : 0})[0];
  if (g_pg->rank() == 0) std::printf("[mpi] %lld rank(s) failed\n", static_cast<long long>(failed));
  g_pg.reset();  // goodbye with the peers, MPI_Finalize when dist::init made MPI
  if (own_mpi) MPI_Finalize();
  return failed ? 1 : 0;
}
#endif

}  // namespace mo::test
