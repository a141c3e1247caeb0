// cpu_isa.cpp: cpuid once, the MO_CPU_ISA override and the test hook (see cpu_isa.h).
#include "autograd/cpu_isa.h"

#include <atomic>
#include <cstdlib>
#include <string>

#include "autograd/check.h"

namespace mo {

CpuIsa cpu_isa_detected() {
  static const CpuIsa isa = [] {
#if MO_X86_SIMD
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("fma"))
      return CpuIsa::avx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return CpuIsa::avx2;
#endif
    return CpuIsa::scalar;
  }();
  return isa;
}

const char* cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::avx512: return "avx512";
    case CpuIsa::avx2: return "avx2";
    default: return "scalar";
  }
}

static CpuIsa clamp(CpuIsa want) {
  CpuIsa have = cpu_isa_detected();
  return static_cast<int>(want) < static_cast<int>(have) ? want : have;
}

static CpuIsa from_env() {
  const char* e = std::getenv("MO_CPU_ISA");
  if (!e || !*e) return cpu_isa_detected();
  std::string s(e);
  if (s == "scalar") return clamp(CpuIsa::scalar);
  if (s == "avx2") return clamp(CpuIsa::avx2);
  if (s == "avx512") return clamp(CpuIsa::avx512);
  MO_FAIL("MO_CPU_ISA='{}' is not one of scalar, avx2, avx512", s);
}

static std::atomic<int> g_forced{-1};

CpuIsa cpu_isa() {
  int f = g_forced.load(std::memory_order_relaxed);
  if (f >= 0) return static_cast<CpuIsa>(f);
  static const CpuIsa isa = from_env();
  return isa;
}

CpuIsa set_cpu_isa(CpuIsa isa) {
  CpuIsa c = clamp(isa);
  g_forced.store(static_cast<int>(c), std::memory_order_relaxed);
  return c;
}

}  // namespace mo
