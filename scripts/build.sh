#!/usr/bin/env bash
# build.sh: configure and build mo into ./build (CUDA on when nvcc is found), then install the tools
# to /usr/local/bin (or $PREFIX/bin).  Usage: bash scripts/build.sh [extra cmake args]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x /usr/local/cuda/bin/nvcc ]; then export PATH=/usr/local/cuda/bin:$PATH; fi
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release ${PREFIX:+-DCMAKE_INSTALL_PREFIX=$PREFIX} "$@"
cmake --build build -j"$(nproc)"
if [ -w "${PREFIX:-/usr/local}" ]; then cmake --install build >/dev/null; fi
