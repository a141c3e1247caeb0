// column_sum.h: out[j] = Σ_i x[i·N + j] for a row-major (M, N) CPU array, by fixed blocks of rows
// (each block's partial row in order, then the blocks in order). It streams x once, where a loop per
// column walks all of x with stride N once per column, and gives the same bits for any thread count.
#pragma once
#include <cstdint>

namespace mo {

template <typename T>
void column_sum_cpu(const T* x, int64_t M, int64_t N, T* out);

}  // namespace mo
