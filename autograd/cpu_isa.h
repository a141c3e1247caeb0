// cpu_isa.h: the one runtime ISA dispatch of the tree. cpu_isa() is the widest vector instruction set
// this CPU runs (cpuid, read once), or what MO_CPU_ISA=scalar|avx2|avx512 asks for (never wider than
// the CPU has); kernels with AVX2/AVX-512 bodies (compiled per function with MO_TARGET_AVX2 /
// MO_TARGET_AVX512, never for the whole build) switch on it, so one binary runs on every x86-64.
#pragma once

// MO_TARGET_AVX2_NOFMA: AVX2 without FMA, for code whose results must not change when the compiler
// would fuse a multiply and an add (the data pipeline's bit-exact resampling and normalisation).
// MO_ALWAYS_INLINE on a shared body makes it compile with the ISA of each caller that inlines it.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__CUDACC__)
#define MO_X86_SIMD 1
#define MO_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define MO_TARGET_AVX2_NOFMA __attribute__((target("avx2")))
#define MO_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")))
#else
#define MO_X86_SIMD 0
#define MO_TARGET_AVX2
#define MO_TARGET_AVX2_NOFMA
#define MO_TARGET_AVX512
#endif
#define MO_ALWAYS_INLINE __attribute__((always_inline)) inline

namespace mo {

enum class CpuIsa { scalar = 0, avx2 = 1, avx512 = 2 };

// The ISA the kernels use: detected once (AVX2 needs avx2+fma, AVX-512 needs f/bw/vl/dq), lowered by
// MO_CPU_ISA; a bad MO_CPU_ISA value is an error naming the variable and the accepted values.
CpuIsa cpu_isa();
// What this CPU supports, ignoring MO_CPU_ISA and set_cpu_isa.
CpuIsa cpu_isa_detected();
const char* cpu_isa_name(CpuIsa isa);
// Tests: forces `isa` (clamped to what the CPU supports) until the next call; returns the ISA in force.
CpuIsa set_cpu_isa(CpuIsa isa);

}  // namespace mo
