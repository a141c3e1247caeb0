#!/usr/bin/env bash
# screenshot.sh: regenerates docs/img/mo_serve.png, the mo_serve page (1100x800) after classifying a photo,
# in headless Chromium (apt-get install chromium chromium-driver).
#
#   bash scripts/serve/screenshot.sh [BUILD_DIR=build] [PHOTO=tests/data/images/chelsea.jpg] [OUT=docs/img/mo_serve.png]
#
# Weights: $MO_SERVE_WEIGHTS (with $MO_SERVE_MODEL) when set; otherwise a randomly initialised mambaout_femto
# (PyTorch's init of tests/reference/mambaout_ref.py, seed 0, via scripts/io/torch_io.py): real ImageNet
# weights cannot be downloaded here, so that picture shows the page layout, not meaningful classes.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build}
PHOTO=${2:-tests/data/images/chelsea.jpg}
OUT=${3:-docs/img/mo_serve.png}
[ -x "$BUILD/tools/mo_serve" ] || { echo "no $BUILD/tools/mo_serve: build first (bash scripts/build.sh)" >&2; exit 1; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
WEIGHTS=${MO_SERVE_WEIGHTS:-}
MODEL=${MO_SERVE_MODEL:-}
if [ -z "$WEIGHTS" ]; then
  WEIGHTS=$TMP/mambaout_femto_random.pth
  MODEL=mambaout_femto
  /usr/bin/python3 scripts/io/torch_io.py ref-save --seed 0 --out "$WEIGHTS" --input "$TMP/x.bin" --logits "$TMP/y.bin"
fi
python3 scripts/serve/screenshot.py --serve "$BUILD/tools/mo_serve" --weights "$WEIGHTS" --model "$MODEL" \
  --photo "$PHOTO" --out "$OUT"
