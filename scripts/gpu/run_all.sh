#!/usr/bin/env bash
# run_all.sh: everything the GPU machine does in one call: build (Release, sm_90, all cores), the
# CUDA tests, the benchmarks with their peers (timm eager and torch.compile, same call), and a short
# table last. Full logs go to $OUT (the device tool brings them back).
#   bash scripts/gpu/run_all.sh [build] [tests] [kernels] [bench] [bench-compile] [profile] [nsys] [demo] [data]
#   (default: all but profile and nsys)
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/mo_out}
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
stages=${*:-build tests kernels bench bench-compile demo data}
has() { [[ " $stages " == *" $1 "* ]]; }
B=build-gpu

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/machine.txt"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ)  host cores: $(nproc)" | tee -a "$OUT/machine.txt"

if has build || [ ! -x $B/tools/mo_bench ]; then
  t0=$(date +%s)
  cmake -S . -B $B -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 >"$OUT/build.log" 2>&1 &&
    ninja -C $B -k 0 -j"$(nproc)" >>"$OUT/build.log" 2>&1
  rc=$?
  echo "build rc=$rc in $(( $(date +%s) - t0 )) s"
  # keep going with whatever built (-k 0); show the first errors
  if [ $rc != 0 ]; then grep -E "error|FAILED" "$OUT/build.log" | head -40; fi
  [ -x $B/tools/mo_bench ] || exit 1
fi

if has tests; then
  ctest --test-dir $B -R Cuda --output-on-failure --timeout 600 >"$OUT/cuda_tests.log" 2>&1
  echo "cuda tests rc=$?"
  grep -E "tests passed|Failed|FAILED|\*\*\*" "$OUT/cuda_tests.log" | head -40
fi

if has kernels && [ -x $B/tools/mo_bench_kernels ]; then
  $B/tools/mo_bench_kernels >"$OUT/kernels.log" 2>&1
  echo "kernel bench rc=$?"; tail -30 "$OUT/kernels.log"
fi

bench() {  # name args...
  local tag=$1; shift
  timeout 300 "$@" --json >>"$OUT/bench.jsonl" 2>>"$OUT/bench_err.log" || echo "{\"tool\": \"$tag\", \"error\": \"rc=$?\"}" >>"$OUT/bench.jsonl"
}
# model batch mode dtype: the training rows of the GPU-speed issue, tiny inference, and fp32 (TF32 off)
specs=("mambaout_tiny 256 train bf16" "mambaout_femto 256 train bf16" "mambaout_small 128 train bf16"
       "mambaout_base 128 train bf16" "mambaout_tiny 256 infer bf16" "mambaout_tiny 128 train fp32")
if has bench; then  # mo and timm eager, alternating per row
  : >"$OUT/bench.jsonl"
  for spec in "${specs[@]}"; do
    set -- $spec
    bench mo $B/tools/mo_bench --device cuda --dtype $4 --model $1 --batch $2 --mode $3 --warmup 5 --iters 15
    timeout 300 python3 scripts/bench/peer_torch.py --device cuda --dtype $4 --model $1 --batch $2 --mode $3 \
      --warmup 5 --iters 15 >>"$OUT/bench.jsonl" 2>>"$OUT/bench_err.log"
  done
fi
if has bench-compile; then  # mo again beside each torch.compile peer, so every ratio comes from one call
  [ -f "$OUT/bench.jsonl" ] || : >"$OUT/bench.jsonl"
  for spec in "${specs[@]}"; do
    set -- $spec
    [ "$4" = bf16 ] || continue
    has bench || bench mo $B/tools/mo_bench --device cuda --dtype $4 --model $1 --batch $2 --mode $3 --warmup 5 --iters 15
    timeout 200 python3 scripts/bench/peer_torch.py --device cuda --dtype $4 --model $1 --batch $2 --mode $3 \
      --warmup 5 --iters 15 --compile >>"$OUT/bench.jsonl" 2>>"$OUT/bench_err.log"
  done
fi
if has profile; then  # where a step goes, per op (synchronised), for tiny and base
  for m in "mambaout_tiny 256" "mambaout_base 128"; do
    set -- $m
    $B/tools/mo_bench --device cuda --dtype bf16 --model $1 --batch $2 --mode train --warmup 3 --iters 5 --profile \
      >>"$OUT/profile.txt" 2>&1
  done
  grep -A24 "step parts" "$OUT/profile.txt" | head -60
fi
if has nsys && command -v nsys >/dev/null; then  # unsynchronised kernel times of a few tiny steps
  nsys profile -o /tmp/mo_tiny --force-overwrite true $B/tools/mo_bench --device cuda --dtype bf16 \
    --model mambaout_tiny --batch 256 --mode train --warmup 2 --iters 3 >/dev/null 2>&1
  nsys stats --report cuda_gpu_kern_sum --format csv /tmp/mo_tiny.nsys-rep 2>/dev/null |
    python3 -c "import csv,sys; r=list(csv.DictReader(sys.stdin)); [print(f\"{float(x['Total Time (ns)'])/5e6:8.2f} ms/step {int(x['Instances'])//5:5d}x  {x['Name'][:110]}\") for x in r[:40]]" \
    | tee "$OUT/nsys_kernels.txt"
fi
if has demo; then  # the README's main job on the GPU: Fashion-MNIST, recipes/fashion_mnist.yaml as written
  t0=$(date +%s)
  SKIP_INSTALL=1 BUILD=$B DATA=/tmp/fmnist OUT=/tmp/fmnist_run FMNIST_SRC=${FMNIST_SRC:-} bash scripts/train/demo.sh >"$OUT/demo.log" 2>&1
  echo "demo rc=$? in $(( $(date +%s) - t0 )) s"
  grep -iE "top-1|top1|acc|images/s|real" "$OUT/demo.log" | tail -12
fi
if has data; then  # JPEG pipeline scaling with worker threads, and the PIL/torchvision peer on one thread
  python3 scripts/data/make_bench_images.py /tmp/bench_jpeg 200 >/dev/null 2>&1
  $B/tools/mo_bench_data --dir /tmp/bench_jpeg --threads 1,2,4,8,16 --seconds 3 --modes train,eval >"$OUT/data_bench.log" 2>&1
  python3 scripts/data/bench_peer.py /tmp/bench_jpeg --seconds 3 >>"$OUT/data_bench.log" 2>&1
  cat "$OUT/data_bench.log" | tail -30
fi
[ -f "$OUT/bench.jsonl" ] && python3 scripts/bench/table.py "$OUT/bench.jsonl" | tee "$OUT/table.md"
