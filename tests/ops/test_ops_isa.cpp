// test_ops_isa.cpp: every float32 CPU kernel with an AVX2 / AVX-512 body gives the scalar kernel's
// result (forward and each input gradient) on odd shapes, with each ISA forced through the
// set_cpu_isa() hook; an ISA this CPU lacks is skipped with a message. Also MO_CPU_ISA's parsing.
#include <cstdio>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <functional>

#include "autograd/cpu_isa.h"
#include "autograd/graph.h"
#include "ops/activation/activation.h"
#include "ops/conv/dwconv2d.h"
#include "ops/fused/gated_dwconv.h"
#include "ops/fused/layer_norm_linear.h"
#include "ops/norm/layer_norm.h"
#include "ops/reduce/column_sum.h"
#include "tests/test_util.h"

using namespace mo;
using mo::test::randn;

namespace {
using Fn = std::function<Tensor(const std::vector<Tensor>&)>;

// Forward output and the gradients of sum(f(x) ⊙ r) for every input, under `isa`.
std::vector<Tensor> run_under(CpuIsa isa, const Fn& f, const std::vector<Tensor>& inputs) {
  set_cpu_isa(isa);
  std::vector<Tensor> xs;
  for (const Tensor& t : inputs) xs.push_back(t.clone().requires_grad_());
  Tensor y = f(xs);
  Tensor r = randn(y.shape(), 99);
  run_backward(y, r);
  std::vector<Tensor> out{y.detach()};
  for (const Tensor& x : xs) out.push_back(x.grad());
  set_cpu_isa(cpu_isa_detected());
  return out;
}

void expect_isa_matches_scalar(CpuIsa isa, const std::string& what, const Fn& f, const std::vector<Tensor>& inputs,
                               double tol = 2e-5) {
  std::vector<Tensor> ref = run_under(CpuIsa::scalar, f, inputs), got = run_under(isa, f, inputs);
  ASSERT_EQ(ref.size(), got.size());
  for (size_t i = 0; i < ref.size(); ++i)
    EXPECT_TRUE(mo::test::all_close(got[i], ref[i], tol,
                                    what + (i == 0 ? " output" : " grad of input " + std::to_string(i - 1)) + " (" +
                                        cpu_isa_name(isa) + ")"));
}

void check_all_kernels(CpuIsa isa) {
  // odd channel counts leave masked tails on both vector widths; W < 4 + k − 1 exercises the edge path
  for (int64_t C : {1, 5, 19, 33}) {
    for (int64_t W : {3, 9}) {
      std::string shape = "C " + std::to_string(C) + " W " + std::to_string(W);
      for (int k : {3, 7})
        expect_isa_matches_scalar(isa, "dwconv2d k" + std::to_string(k) + " " + shape,
                                  [k](const std::vector<Tensor>& v) { return dwconv2d(v[0], v[1], v[2], k / 2); },
                                  {randn({2, 5, W, C}, 1), randn({C, 1, k, k}, 2, DType::f32, 0.2), randn({C}, 3)});
    }
    if (C == 1) continue;  // LayerNorm of one channel: dx is rounding noise around 0 on every path
    expect_isa_matches_scalar(isa, "layer_norm C " + std::to_string(C),
                              [](const std::vector<Tensor>& v) { return layer_norm(v[0], v[1], v[2], 1e-6); },
                              {randn({3, 7, C}, 4, DType::f32, 3.0), randn({C}, 5), randn({C}, 6)}, 5e-5);
    expect_isa_matches_scalar(isa, "layer_norm_linear C " + std::to_string(C),
                              [](const std::vector<Tensor>& v) {
                                return layer_norm_linear(v[0], v[1], v[2], 1e-6, v[3], v[4]);
                              },
                              {randn({300, C}, 7), randn({C}, 8), randn({C}, 9), randn({6, C}, 10), randn({6}, 11)},
                              5e-5);
  }
  for (Act a : {Act::gelu, Act::silu}) {
    std::string n = act_name(a);
    for (int64_t len : {1, 17, 20001})  // 20001: the threaded path and a tail
      expect_isa_matches_scalar(isa, n + " n " + std::to_string(len),
                                [a](const std::vector<Tensor>& v) { return activation(v[0], a); },
                                {randn({len}, 12, DType::f32, 4.0)});
    for (auto [h, cc] : {std::pair<int64_t, int64_t>{21, 7}, {13, 13}, {40, 16}})
      expect_isa_matches_scalar(isa, "gated_dwconv " + n + " h " + std::to_string(h) + " cc " + std::to_string(cc),
                                [h, a](const std::vector<Tensor>& v) { return gated_dwconv(v[0], v[1], v[2], h, a); },
                                {randn({2, 6, 11, 2 * h}, 13, DType::f32, 2.0), randn({cc, 1, 7, 7}, 14, DType::f32, 0.2),
                                 randn({cc}, 15)});
  }
}
}  // namespace

TEST(CpuIsa, Avx2MatchesScalar) {
  if (set_cpu_isa(CpuIsa::avx2) != CpuIsa::avx2) GTEST_SKIP() << "this CPU has no AVX2+FMA: the AVX2 kernels cannot run";
  check_all_kernels(CpuIsa::avx2);
}

TEST(CpuIsa, Avx512MatchesScalar) {
  if (set_cpu_isa(CpuIsa::avx512) != CpuIsa::avx512)
    GTEST_SKIP() << "this CPU has no AVX-512 (f, bw, vl, dq): the AVX-512 kernels cannot run";
  check_all_kernels(CpuIsa::avx512);
}

TEST(CpuIsa, ActivationsExtremeInputs) {
  // large |x| (exp range clamps) and values around 0 agree with the scalar erf/exp forms
  std::vector<float> v;
  for (float x : {-100.f, -30.f, -9.f, -3.5f, -1e-3f, 0.f, 1e-8f, 0.5f, 2.f, 6.f, 40.f, 100.f}) v.push_back(x);
  Tensor x = Tensor::from_vector(v, {static_cast<int64_t>(v.size())});
  for (CpuIsa isa : {CpuIsa::avx2, CpuIsa::avx512}) {
    if (set_cpu_isa(isa) != isa) continue;
    for (Act a : {Act::gelu, Act::silu}) expect_isa_matches_scalar(isa, std::string(act_name(a)) + " extremes",
                                                                   [a](const std::vector<Tensor>& t) { return activation(t[0], a); }, {x}, 1e-6);
  }
  set_cpu_isa(cpu_isa_detected());
}

// Run by EnvironmentOverride in a child process with MO_CPU_ISA set: prints the ISA in force or the error.
TEST(CpuIsa, Child) {
  if (!std::getenv("MO_ISA_TEST_CHILD")) GTEST_SKIP() << "run by CpuIsa.EnvironmentOverride in a child process";
  std::string err = mo::test::error_of([] { cpu_isa(); });
  std::printf("[isa=%s] [err=%s]\n", err.empty() ? cpu_isa_name(cpu_isa()) : "-", err.c_str());
}

TEST(CpuIsa, EnvironmentOverride) {
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  auto child = [&](const std::string& value) {
    return mo::test::run_command("MO_ISA_TEST_CHILD=1 MO_CPU_ISA=" + value + " '" + self + "' --gtest_filter=CpuIsa.Child")
        .output;
  };
  const CpuIsa have = cpu_isa_detected();
  EXPECT_NE(child("scalar").find("[isa=scalar]"), std::string::npos);
  // asking for more than the CPU has gives what it has
  std::string want2 = std::string("[isa=") + cpu_isa_name(have == CpuIsa::scalar ? CpuIsa::scalar : CpuIsa::avx2) + "]";
  EXPECT_NE(child("avx2").find(want2), std::string::npos) << child("avx2");
  EXPECT_NE(child("avx512").find(std::string("[isa=") + cpu_isa_name(have) + "]"), std::string::npos);
  std::string bad = child("avx9");
  EXPECT_NE(bad.find("MO_CPU_ISA='avx9' is not one of scalar, avx2, avx512"), std::string::npos) << bad;
}

TEST(CpuKernels, ColumnSumMatchesDoubleSum) {
  for (auto [M, N] : {std::pair<int64_t, int64_t>{1, 1}, {255, 3}, {257, 48}, {1000, 129}}) {
    std::vector<float> x = randn({M, N}, 21).to_vector<float>();
    std::vector<float> out(N);
    column_sum_cpu(x.data(), M, N, out.data());
    for (int64_t j = 0; j < N; ++j) {
      double ref = 0, mag = 0;
      for (int64_t i = 0; i < M; ++i) ref += x[i * N + j], mag += std::abs(x[i * N + j]);
      EXPECT_NEAR(out[j], ref, 1e-6 * mag + 1e-7) << "column " << j << " of (" << M << ", " << N << ")";
    }
  }
}
