// simd.h: MO_DATA_CLONES builds a function twice, for AVX2 and for baseline x86-64, and picks one at
// load time (GCC target_clones): the hot loops of the pipeline vectorise wider where the CPU allows,
// and the binary still runs everywhere. Elsewhere it expands to nothing.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__CUDACC__)
#define MO_DATA_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define MO_DATA_CLONES
#endif
