// test_util.h: helpers shared by the test suites: random tensors, closeness checks, an fp64
// finite-difference gradient check, .npy reading/writing (PyTorch parity data) and running
// Debian's python3 on a script.
#pragma once
#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "autograd/graph.h"
#include "autograd/tensor.h"

namespace mo::test {

// Fresh random data from a fixed seed: N(mean, std²) or U(lo, hi).
Tensor randn(const Shape& shape, uint64_t seed, DType dt = DType::f32, double std = 1.0, double mean = 0.0);
Tensor rand_uniform(const Shape& shape, uint64_t seed, double lo, double hi, DType dt = DType::f32);

// max |a − b| / max(max |b|, floor): a scale-aware relative error (read as float64 on the CPU, any
// device and dtype); NaN anywhere gives infinity.
double rel_error(const Tensor& a, const Tensor& b, double floor = 1e-6);
// rel_error(a, b) ≤ tol with equal shapes; the failure names the worst element. Two undefined tensors
// are close; one undefined tensor is not (a gradient that did not flow).
::testing::AssertionResult all_close(const Tensor& a, const Tensor& b, double tol, const std::string& what = "");
// The same bits (float64 compared as float64, the rest as float32: bf16 -> f32 is exact), e.g. two runs
// of a deterministic kernel.
::testing::AssertionResult bit_identical(const Tensor& a, const Tensor& b, const std::string& what = "");

// fp64 gradient check: f maps inputs to one output tensor; compares the analytic gradient of
// sum(f(x) ⊙ r) (random r) against central differences for every input that requires grad.
::testing::AssertionResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                                     std::vector<Tensor> inputs, double eps = 1e-6, double tol = 1e-6,
                                     int max_checks_per_input = 64);

// .npy (little-endian f4/f8/i8/u1, C order) I/O.
Tensor load_npy(const std::string& path);
void save_npy(const std::string& path, const Tensor& t);

// Runs `MO_PYTHON script args` and returns its exit code (output goes to the test log).
int run_python(const std::string& script, const std::string& args);
bool python_has_torch();
std::string temp_dir(const std::string& tag);
// A shell command's exit status (-1 when it died of a signal or could not start) and its stdout + stderr.
struct RunResult {
  int rc = -1;
  std::string output;
};
// Runs `cmd` through the shell with stdin from /dev/null.
RunResult run_command(const std::string& cmd);
// The message of the mo::Error that f throws; "" when it throws none (another exception propagates).
std::string error_of(const std::function<void()>& f);
// `name` under the temp directory (a private one per test process; see test_util.cpp).
std::string tmp_path(const std::string& name);

}  // namespace mo::test
