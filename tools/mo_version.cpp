// mo_version: prints the build configuration (CUDA, cuDNN, MPI) and the visible GPUs.
#include <cstdio>

#include "autograd/cuda_allocator.h"

int main() {
#ifdef MO_WITH_CUDA
  const char* cuda = "on";
#else
  const char* cuda = "off";
#endif
#ifdef MO_WITH_MPI
  const char* mpi = "on";
#else
  const char* mpi = "off";
#endif
  std::printf("mo: CUDA %s, MPI %s, GPUs visible: %d\n", cuda, mpi, mo::cuda_device_count());
  return 0;
}
