// op_table.h: one list of op cases that drives the three tests of every op, in the spirit of ggml's
// test_case and PyTorch's OpInfo. A case names the op and its sample, the function to call, how each
// input is drawn, the PyTorch expression of the same computation and the tolerances; its `checks` say
// which of the three drivers run it:
//   kGradcheck  fp64 finite differences on the CPU         tests/ops/test_ops_gradcheck.cpp
//   kTorch      fp64 forward and gradients against PyTorch tests/nn/test_pytorch_parity.cpp
//               (through tests/reference/op_ref.py)
//   kCuda       CUDA (float32 and bfloat16) against the    tests/cuda/test_cuda_ops.cpp
//               CPU in float64 on the same rounded values
// The cases themselves are in op_table.cpp: adding an op adds its entries there.
#pragma once
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "autograd/tensor.h"

namespace mo::test {

using OpFn = std::function<Tensor(const std::vector<Tensor>&)>;

enum Check : unsigned { kGradcheck = 1, kTorch = 2, kCuda = 4, kCpu = kGradcheck | kTorch, kAll = 7 };

// One argument of an op: its data (float64 on the CPU, drawn from a seed) and how the tests treat it.
struct OpInput {
  Shape shape;
  std::function<Tensor(const Shape&, uint64_t seed)> draw;
  bool grad = true;       // a leaf whose gradient is checked
  bool keep_f32 = false;  // stays float32 in a bfloat16 CUDA run (the mixup targets of the loss)
  int64_t offset = 0;     // CUDA: the leaf starts this many elements into a larger buffer (misaligned)
  OpInput no_grad() const;
  OpInput f32() const;
  OpInput at(int64_t elements) const;
};
OpInput normal(const Shape& s, double std = 1.0, double mean = 0.0);  // N(mean, std²)
OpInput uniform(const Shape& s, double lo, double hi);                // U(lo, hi), no gradient
OpInput soft_targets(int64_t rows, int64_t classes);                  // positive rows summing to 1, no gradient
OpInput given(const Tensor& data);                                    // fixed data, no gradient

struct OpCase {
  std::string name;  // op and sample, unique ("linear 96->512"); also the gtest parameter name
  OpFn fn;
  std::vector<OpInput> inputs;
  std::string torch;  // Python expression over x[0], x[1], ... (torch, F = torch.nn.functional)
  unsigned checks = kCpu;
  uint64_t seed = 0;  // input i is drawn from seed + i, the upstream gradient from seed + 99 (0: from the name)
  // kGradcheck: central-difference step, tolerance, elements checked per input
  double gc_eps = 1e-6, gc_tol = 1e-6;
  int gc_checks = 64;
  double torch_tol = 1e-10;  // kTorch: relative error of the float64 forward and every gradient
  // kCuda: the dtypes run, their tolerances (max |error| / max |reference|), and extra checks
  std::vector<DType> cuda_dtypes{DType::f32, DType::bf16};
  double tol_f32 = 1e-4, tol_bf16 = 2e-2;
  bool deterministic = false;   // two runs give the same bits, forward and every gradient
  bool no_grad_same = false;    // the forward under NoGradGuard (inference) gives the same bits
  int64_t upstream_offset = 0;  // the upstream gradient starts this many elements into its buffer
  OpFn unfused;                 // a fused op: the same bits as this composition of its parts, on the GPU

  OpCase& on(unsigned c) { checks = c; return *this; }
  OpCase& dtypes(std::vector<DType> d) { cuda_dtypes = std::move(d); return *this; }
  OpCase& tols(double f32, double bf16) { tol_f32 = f32, tol_bf16 = bf16; return *this; }
  OpCase& det() { deterministic = true; return *this; }
  OpCase& gradcheck_checks(int n) { gc_checks = n; return *this; }
  OpCase& upstream_at(int64_t elements) { upstream_offset = elements; return *this; }
  OpCase& same_bits_as(OpFn parts) { unfused = std::move(parts); return *this; }
};

// Every case, in table order (checked once: names unique, each case on at least one driver).
const std::vector<OpCase>& op_cases();
// The cases run by one driver.
std::vector<OpCase> op_cases_with(Check c);
// The name as a gtest parameter / directory name: letters, digits and '_'.
std::string case_id(const OpCase& c);
// gtest's parameter-name generator for a table of cases.
struct CaseName {
  std::string operator()(const ::testing::TestParamInfo<OpCase>& info) const { return case_id(info.param); }
};
// The inputs of c as float64 CPU tensors (no gradient flags set), and the upstream gradient for an
// output of shape y.
std::vector<Tensor> draw_inputs(const OpCase& c);
Tensor draw_upstream(const OpCase& c, const Shape& y);
// gtest prints a parameter with this (the default would dump the bytes of the struct).
inline std::ostream& operator<<(std::ostream& os, const OpCase& c) { return os << c.name; }

}  // namespace mo::test
