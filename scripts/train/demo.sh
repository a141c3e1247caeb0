#!/usr/bin/env bash
# demo.sh: the README's first command. Installs the Debian packages, builds mo, prepares Fashion-MNIST
# as a JPEG ImageFolder (32x32), trains mambaout_femto on it with recipes/fashion_mnist.yaml, validates
# the checkpoint and classifies a few test images.
#   GPU: the recipe as written (10 epochs of 468 steps, batch 128, bf16).
#   CPU: 3 epochs of 100 steps (fp32), a few minutes on 2 cores (docs/bench_train.md).
# Environment: SKIP_INSTALL=1 skips apt-get; DATA (default data_cache/fashion-mnist) and OUT (default
# output/fashion_mnist_demo) choose the folders; EXTRA="--set k=v ..." adds mo_train overrides.
# Rerunning continues an interrupted run (train.resume=auto) and re-validates a finished one.
# It ends by printing where the programs are and the line that puts them on the PATH.
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:-data_cache/fashion-mnist}
OUT=${OUT:-output/fashion_mnist_demo}
BUILD=${BUILD:-build}
BIN=$BUILD/tools
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}  # see tools/common/omp_env.h

if [ -z "${SKIP_INSTALL:-}" ]; then bash scripts/install_deps.sh; fi

# The same configuration as scripts/build.sh, but only the programs the demo runs.
if [ -x /usr/local/cuda/bin/nvcc ]; then export PATH=/usr/local/cuda/bin:$PATH; fi
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target mo_version mo_prepare mo_train mo_validate mo_predict

"$BIN/mo_version"
"$BIN/mo_prepare" fashion-mnist --out "$DATA" --size 32 ${FMNIST_SRC:+--src "$FMNIST_SRC"}

ARGS=(--set "data.root=$DATA" --set "train.output=$OUT" --set train.resume=auto)
if "$BIN/mo_version" | grep -q "GPUs visible: [1-9]"; then
  echo "== training on the GPU: recipes/fashion_mnist.yaml as written"
else
  echo "== no GPU: a short CPU run (3 epochs x 100 steps of 128 images, fp32)"
  ARGS+=(--set sched.epochs=3 --set train.steps_per_epoch=100 --set sched.warmup_epochs=0.3
         --set train.eval_every=0 --set "data.workers=$(nproc)")
fi
# shellcheck disable=SC2086
time "$BIN/mo_train" recipes/fashion_mnist.yaml "${ARGS[@]}" ${EXTRA:-}

CKPT=$OUT/checkpoints/best.mo
[ -f "$CKPT" ] || CKPT=$(ls "$OUT"/checkpoints/ckpt-*.mo | sort | tail -1)
echo "== validating $CKPT on $DATA/val"
time "$BIN/mo_validate" "$CKPT" --data "$DATA" --workers "$(nproc)"
echo "== classifying three test images"
"$BIN/mo_predict" -w "$CKPT" --topk 3 "$DATA"/val/ankle_boot/"$(ls "$DATA"/val/ankle_boot | head -1)" \
  "$DATA"/val/trouser/"$(ls "$DATA"/val/trouser | head -1)" "$DATA"/val/bag/"$(ls "$DATA"/val/bag | head -1)"

TOOLS=$(cd "$BIN" && pwd)
echo "== the programs are in $TOOLS; to run them by name (mo_train femto, mo_predict -w $CKPT IMG):"
echo "   export PATH=\"$TOOLS:\$PATH\""
echo "   or install them with the recipes, libraries and headers: cmake --build $BUILD && cmake --install $BUILD --prefix ~/.local (docs/install.md)"
