// column_sum.cpp: the blocked, deterministic column sum of column_sum.h.
#include "ops/reduce/column_sum.h"

#include <algorithm>
#include <vector>

namespace mo {

template <typename T>
void column_sum_cpu(const T* x, int64_t M, int64_t N, T* out) {
  constexpr int64_t kBlock = 256;
  const int64_t nb = (M + kBlock - 1) / kBlock;
  std::vector<T> part(static_cast<size_t>(nb * N), T(0));
#pragma omp parallel for schedule(static) if (M * N > 16384)
  for (int64_t b = 0; b < nb; ++b) {
    T* q = part.data() + b * N;
    for (int64_t i = b * kBlock; i < std::min(M, (b + 1) * kBlock); ++i) {
      const T* r = x + i * N;
      for (int64_t j = 0; j < N; ++j) q[j] += r[j];
    }
  }
  std::fill(out, out + N, T(0));
  for (int64_t b = 0; b < nb; ++b)
    for (int64_t j = 0; j < N; ++j) out[j] += part[b * N + j];
}

template void column_sum_cpu<float>(const float*, int64_t, int64_t, float*);
template void column_sum_cpu<double>(const double*, int64_t, int64_t, double*);

}  // namespace mo
