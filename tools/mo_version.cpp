// mo_version: prints the version, the git commit, the build configuration (CUDA, NCCL, MPI, cuDNN) and
// the GPUs this process sees. scripts/train/demo.sh reads its "GPUs visible: N".
#include <cstdio>

#include "autograd/cuda_allocator.h"
#include "tools/common/cli.h"

int main(int argc, char** argv) {
  mo::tools::Cli cli("mo_version", "Prints mo's version, the git commit, the build flags and the GPUs visible.");
  if (auto rc = cli.parse(argc, argv)) return *rc;
  return cli.run([] {
    std::printf("%s\nGPUs visible: %d\n", mo::tools::version_text("mo").c_str(), mo::cuda_device_count());
    return 0;
  });
}
