#!/usr/bin/env bash
# test.sh: build and run every test (CPU tests, MPI tests under mpirun -np 2, PyTorch parity
# tests; CUDA tests skip themselves without a GPU). This is the README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
ctest --test-dir build --output-on-failure -j2 --timeout 900
