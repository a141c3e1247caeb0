#!/usr/bin/env bash
# install_deps.sh: the Debian packages mo builds and tests with (run as root, or with sudo).
# nvcc/cuDNN/NCCL come with the CUDA toolkit where there is one; without it mo builds CPU-only.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
  build-essential cmake ninja-build pkg-config git ca-certificates libcpp-httplib-dev \
  libopenblas-openmp-dev libjpeg-dev libpng-dev libwebp-dev zlib1g-dev libprotobuf-dev protobuf-compiler libfmt-dev \
  libyaml-cpp-dev libcli11-dev \
  libgtest-dev libomp-dev libopenmpi-dev openmpi-bin \
  python3 python3-numpy python3-torch python3-torchvision python3-pil \
  dataset-fashion-mnist clang-14 libclang-rt-14-dev python3-pip chromium chromium-driver
# Python packages the tests read files back with (not in Debian): safetensors for Debian's
# python3 (beside python3-torch); tensorboard for the python3 first on the PATH.
/usr/bin/python3 -m pip install -q --break-system-packages safetensors
python3 -m pip install -q -r scripts/train/requirements.txt || python3 -m pip install -q --break-system-packages -r scripts/train/requirements.txt
# onnxruntime (and onnx, for its checker) for the ONNX export tests (tests/nn/io/test_onnx_export.cpp): they
# pull numpy 2, so they go into their own folder build/pyort for the python3 first on the PATH, put on
# PYTHONPATH by those tests only.
python3 -m pip install -q --upgrade --target build/pyort onnxruntime onnx \
  || python3 -m pip install -q --upgrade --break-system-packages --target build/pyort onnxruntime onnx
