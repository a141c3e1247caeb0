// common.cpp: shared op checks.
#include "ops/common.h"

namespace mo {

void no_cuda_build(const char* op) {
  MO_FAIL("{}: got a CUDA tensor but this build of mo has no CUDA support (configure with -DMO_WITH_CUDA=ON)", op);
}

void check_same(const char* op, std::initializer_list<const Tensor*> ts) {
  const Tensor* first = nullptr;
  for (auto* t : ts) {
    if (!t || !t->defined()) continue;
    if (!first) {
      first = t;
      continue;
    }
    MO_CHECK(t->device() == first->device() && t->dtype() == first->dtype(),
             "{}: all tensors must share device and dtype, got {} and {}", op, first->str(), t->str());
  }
}

}  // namespace mo
