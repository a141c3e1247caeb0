// check.cpp: the abort path for broken internal invariants.
#include "autograd/check.h"

#include <cstdio>
#include <cstdlib>

namespace mo {
void fail_internal(const char* file, int line, const std::string& msg) {
  std::fprintf(stderr, "mo internal error at %s:%d: %s\n", file, line, msg.c_str());
  std::abort();
}
}  // namespace mo
