// cuda_graph.h: an experiment for mo_bench --graph: one inference forward captured in a CUDA graph, then
// timed as graph replays, to measure what the launches between kernels cost (issue 12: tiny inference,
// ~90 kernels a batch). Not part of the library: the caching allocator has no private pool for captures,
// so the replays are only safe while nothing else allocates (a benchmark's timing loop); mo_predict and
// mo_serve do not use it. Built with CUDA only; elsewhere graph_replay_time refuses to run.
#pragma once
#include <functional>
#include <string>

#include "autograd/tensor.h"

namespace mo::bench {

struct GraphTiming {
  double seconds = 0;      // the `iters` replays, synchronised
  double max_abs_diff = 0;  // the replayed output against an eager forward on the same input
  int kernels = 0;          // nodes in the captured graph
};

// Captures forward() once on a created stream (after `warmup` eager calls on that stream, so every
// allocation comes from the allocator's cache), replays it `warmup` times, then times `iters` replays.
// Throws mo::Error naming the CUDA call when capture or replay fails (e.g. an op that synchronises).
GraphTiming graph_replay_time(const std::function<Tensor()>& forward, int warmup, int iters);

}  // namespace mo::bench
