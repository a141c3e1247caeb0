// cuda_graph.cu: graph_replay_time (cuda_graph.h), the mo_bench --graph experiment.
#include "tools/bench/cuda_graph.h"

#include <chrono>
#include <cmath>
#include <vector>

#include "autograd/cuda_allocator.h"
#include "autograd/cuda_check.h"

namespace mo::bench {

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

double max_abs_diff(const Tensor& a, const Tensor& b) {
  const std::vector<float> x = a.to(DType::f32).to(Device::cpu()).to_vector<float>();
  const std::vector<float> y = b.to(DType::f32).to(Device::cpu()).to_vector<float>();
  MO_CHECK(x.size() == y.size(), "--graph: the replayed output has {} values, the eager one {}", x.size(), y.size());
  double d = 0;
  for (size_t i = 0; i < x.size(); ++i) d = std::max(d, std::isnan(x[i] - y[i]) ? INFINITY : std::abs(double(x[i]) - y[i]));
  return d;
}

}  // namespace

GraphTiming graph_replay_time(const std::function<Tensor()>& forward, int warmup, int iters) {
  CUDA_CHECK(cudaDeviceSynchronize());
  cudaStream_t s = nullptr;
  CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  void* before = cuda_current_stream();
  cuda_set_current_stream(s);
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  GraphTiming r;
  auto release = [&] {
    if (exec) cudaGraphExecDestroy(exec);
    if (graph) cudaGraphDestroy(graph);
    cuda_set_current_stream(before);
    cudaStreamDestroy(s);
  };
  try {
    for (int i = 0; i < std::max(1, warmup); ++i) forward();
    CUDA_CHECK(cudaStreamSynchronize(s));
    Tensor out;
    CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    try {
      out = forward();
    } catch (...) {
      cudaGraph_t broken = nullptr;
      cudaStreamEndCapture(s, &broken);  // leave capture mode before the error goes on
      if (broken) cudaGraphDestroy(broken);
      throw;
    }
    CUDA_CHECK(cudaStreamEndCapture(s, &graph));
    size_t nodes = 0;
    CUDA_CHECK(cudaGraphGetNodes(graph, nullptr, &nodes));
    r.kernels = static_cast<int>(nodes);
    CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
    for (int i = 0; i < std::max(1, warmup); ++i) CUDA_CHECK(cudaGraphLaunch(exec, s));
    CUDA_CHECK(cudaStreamSynchronize(s));
    const double t0 = now();
    for (int i = 0; i < iters; ++i) CUDA_CHECK(cudaGraphLaunch(exec, s));
    CUDA_CHECK(cudaStreamSynchronize(s));
    r.seconds = now() - t0;
    Tensor eager = forward();  // the same input, eagerly, against what the last replay left in `out`
    CUDA_CHECK(cudaStreamSynchronize(s));
    r.max_abs_diff = max_abs_diff(out, eager);
  } catch (...) {
    release();
    throw;
  }
  release();
  return r;
}

}  // namespace mo::bench
