#!/usr/bin/env bash
# run_all.sh: everything the GPU machine does in one call: build (Release, sm_90, all cores), the
# CUDA tests, the benchmarks with their peers (timm eager and torch.compile, same call), and a short
# table last. Full logs go to $OUT/run_all.tgz (the device tool brings them back; see W below).
#   bash scripts/gpu/run_all.sh [build] [tests] [kernels] [bench] [bench-compile] [peers-parallel] [profile]
#                               [nsys] [demo] [data] [serve] [fmnist-long] [timm-local-dir]
#                               [causal-vs-full] [vit-bench] [nsys-infer] [data-e2e] [fmnist-ablation] [infer-graph]
#   (default: all but peers-parallel, profile, nsys, nsys-infer, serve, fmnist-long, timm-local-dir,
#   causal-vs-full, vit-bench, data-e2e, fmnist-ablation and infer-graph)
# peers-parallel: the torch.compile peers of PEER_ROWS ("model mode batch compile|eager", ';' between rows;
#   default the five rows of the GPU-speed issue) start together, so their 100-170 s compilations overlap;
#   each waits, asleep, until all are warm, then they take turns holding a lock while timing (no other
#   process uses the GPU during a timed run: scripts/bench/peer_torch.py --barrier), each exits after its
#   turn; then mo_bench times the same rows, one after the other. JSON lines into bench.jsonl.
# peers-start / peers-join: the same peers, started before the build so that their compilations overlap
#   the build and the CUDA tests; this script is one more member of their barrier (it joins once the
#   earlier stages are done), so no peer times anything while the tests or another timed run use the GPU;
#   then mo_bench times each row of PEER_ROWS under the same lock, and the peers take their turns.
# serve: builds mo_serve (cpp-httplib from .deps/httplib when the machine has none: run
#   scripts/gpu/stage_httplib.sh on the development machine and carry .deps/httplib), makes 224x224 JPEGs,
#   serves SERVE_MODEL (random init, seed 0, the same weights in both) with mo_serve (GPU, batching on) and
#   then with scripts/bench/serve_peer_timm.py (timm, model(x) per request, preprocessed as mo_serve says),
#   runs scripts/bench/serve_bench.py against each at SERVE_CONC (1,16,128), SERVE_REQUESTS requests each;
#   table in serve.md, JSON lines in serve.jsonl.
# fmnist-long: prepares Fashion-MNIST as the README does (32 px JPEGs; FMNIST_SRC: the IDX folder) and
#   trains recipes/fashion_mnist_long.yaml (FMNIST_EXTRA="--set k=v ..." overrides), then prints the
#   training time and the last epoch's top-1 of the live weights and of the EMA.
# fmnist-ablation: the long recipe and four variants (no RandAugment, no random erasing, no label smoothing,
#   32 px; ABL_VARIANTS picks some of full no-randaugment no-erasing no-smoothing 32px), ABL_EPOCHS (30) each,
#   all at once (accuracy only: their times share the GPU), ABL_EXTRA more
#   overrides; a table of the last epoch's top-1 and its EMA.
# timm-local-dir: mo_convert --hf-dir of a Fashion-MNIST checkpoint (fmnist-long's, else a short run of the
#   quick recipe), loaded by timm.create_model('local-dir:...'): scripts/gpu/check_timm_local_dir.py.
# causal-vs-full: scripts/bench/causal_vs_full.sh (vit_tiny_patch4_32 on Fashion-MNIST, full and causal
#   attention, 3 seeds) with its six runs at once, started right after the build so that it overlaps the
#   CUDA tests (nothing timed runs beside it: later stages wait for it); its table and runs into the logs.
#   EXTRA: more mo_train --set overrides for every run; CVF_TIMEOUT: seconds before the runs are stopped
#   (their summary.csv files so far still come back).
# vit-bench: ViT-S/16 training at 224 (batch 256, bf16) in mo_bench beside timm eager (VIT_PEER=0: none; the compile peer:
#   add "vit_small_patch16_224 train 256 compile" to PEER_ROWS), then mo's attention kernel
#   (mo_bench_kernels --only attention) beside PyTorch's SDPA (scripts/bench/sdpa_peer.py).
# nsys-infer: like nsys, for tiny inference at batch 256.
# infer-graph: mo_bench --graph (tools/bench/cuda_graph.h) for tiny inference at batch 256 and 1.
# data-e2e: mo_train (recipes/femto.yaml, tiny.yaml; batch 256, E2E_STEPS steps: 100 are one epoch of the
#   folder) on a generated JPEG ImageFolder (scripts/data/make_jpeg_folder.py) with data.decoder cpu and gpu,
#   16 workers (E2E_WORKERS: one or more counts; E2E_EXTRA: more --set overrides, e.g. data.worker_nice=10,
#   E2E_TAG a word naming them in the rows and log names),
#   and with data.synthetic=true (the same run reading no file: E2E_DECODERS picks of synthetic cpu gpu), beside
#   mo_bench's synthetic rate for the same model: the median images/s of the steps after the tenth, the
#   epoch's input: line (the step's wait for data), and each run as a share of mo_train synthetic's rate;
#   then mo_bench's step alone and beside a loader on that folder delivering at its full rate (mo_bench --loader,
#   E2E_OVERLAP decoders, default cpu gpu, empty: none; OVERLAP_ITERS steps; OVERLAP_SETS "k=v k=v;k=v": one row per
#   group of the loader's recipe keys, e.g. "data.gpu_batches=4 data.prefetch=8"; OVERLAP_BENCH_ARGS: more mo_bench
#   arguments for every row, e.g. --run-ahead 1): the step's slowdown, the loader's
#   images/s and where its time went.
# BUILD_TARGETS: what the build stage builds (default everything). TESTS_R (Cuda): the ctest -R pattern of the tests stage, TESTS_J (1) its -j; KERNELS_ONLY: words, each
#   a mo_bench_kernels --only.
# B (default build-gpu) is the build folder; PEER_DEVICE/PEER_DTYPE/PEER_ARGS and SERVE_DEVICE/SERVE_PEER_ARGS
# let the same stages run on a CPU (for trying the plumbing; the numbers mean nothing there).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/mo_out}
# Every log goes to W; after each stage (and at exit) W is packed into $OUT/run_all.tgz, because the device
# tool brings back at most 8 files from $OUT: a call stopped at its limit still returns what was done.
W=${RUN_ALL_LOGS:-/tmp/run_all_logs}
mkdir -p "$OUT" "$W"
pack() { tar czf "$OUT/.run_all.tgz" -C "$W" . 2>/dev/null && mv "$OUT/.run_all.tgz" "$OUT/run_all.tgz"; }
trap pack EXIT
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
stages=${*:-build tests kernels bench bench-compile demo data}
# has STAGE: STAGE was asked for; a stage that times anything first waits for causal-vs-full's runs (the
# others, the CUDA tests and fmnist-ablation's accuracy-only runs among them, share the GPU with them)
has() {
  pack
  [[ " $stages " == *" $1 "* ]] || return 1
  case $1 in build | peers-start | causal-vs-full | tests | fmnist-ablation | timm-local-dir) ;; *) join_causal_vs_full ;; esac
}
B=${B:-build-gpu}
PY=${PYTHON:-python3}
prepare_fmnist() {  # the README's data: 32-px JPEGs in /tmp/fmnist
  $B/tools/mo_prepare fashion-mnist --out /tmp/fmnist --size 32 ${FMNIST_SRC:+--src "$FMNIST_SRC"}
}

if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$W/machine.txt"
else
  echo "no nvidia-smi: no GPU" | tee "$W/machine.txt"
fi
echo "date: $(date -u +%Y-%m-%dT%H:%MZ)  host cores: $(nproc)" | tee -a "$W/machine.txt"

PEER_ROWS_DEFAULT="mambaout_femto train 256 compile;mambaout_tiny train 256 compile;mambaout_small train 128 compile;mambaout_base train 128 compile;mambaout_tiny infer 256 compile"
if has peers-start; then  # compile the peers while the rest runs; they wait for this script at the barrier
  IFS=';' read -ra prows <<<"${PEER_ROWS:-$PEER_ROWS_DEFAULT}"
  pbar=$(mktemp -d /tmp/mo_peers.XXXXXX)
  echo $$ >"$pbar/lead.pid"
  pt0=$(date +%s)
  ppids=()
  : >"$W/peers.jsonl"
  for row in "${prows[@]}"; do
    set -- $row
    timeout "${PEER_TIMEOUT:-560}" $PY scripts/bench/peer_torch.py --device "${PEER_DEVICE:-cuda}" --dtype "${PEER_DTYPE:-bf16}" \
      --model $1 --mode $2 --batch $3 --warmup 5 --iters 15 ${PEER_ARGS:-} $([ "$4" = compile ] && echo --compile) \
      --barrier "$pbar" --barrier-n $(( ${#prows[@]} + 1 )) >>"$W/peers.jsonl" 2>>"$W/peers_err.log" &
    ppids+=($!)
  done
fi

# cpp-httplib for mo_serve: the machine's own, else the copy scripts/gpu/stage_httplib.sh staged (carried);
# its fallback/ libraries (and pkgconf) only where the machine lacks them.
HTTPLIB=$PWD/.deps/httplib
CMAKE_EXTRA=()
if [ -f "$HTTPLIB/lib/pkgconfig/cpp-httplib.pc" ] && ! pkg-config --exists cpp-httplib 2>/dev/null; then
  mkdir -p /tmp/mo_httplib_fallback
  for f in "$HTTPLIB"/fallback/lib/*; do
    ldconfig -p | grep -q "^\s*$(basename "$f") " || ln -sf "$f" /tmp/mo_httplib_fallback/
  done
  export LD_LIBRARY_PATH=/tmp/mo_httplib_fallback${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  CMAKE_EXTRA+=(-DCMAKE_PREFIX_PATH="$HTTPLIB")
  command -v pkg-config >/dev/null || CMAKE_EXTRA+=(-DPKG_CONFIG_EXECUTABLE="$HTTPLIB/fallback/bin/pkgconf")
  echo "cpp-httplib: the staged copy in .deps/httplib (fallback libraries: $(ls /tmp/mo_httplib_fallback | tr '\n' ' '))"
fi

if has build || [ ! -x $B/tools/mo_bench ]; then
  t0=$(date +%s)
  cmake -S . -B $B -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 "${CMAKE_EXTRA[@]}" >"$W/build.log" 2>&1 &&
    ninja -C $B -k 0 -j"$(nproc)" ${BUILD_TARGETS:-} >>"$W/build.log" 2>&1
  rc=$?
  echo "build rc=$rc in $(( $(date +%s) - t0 )) s"
  # keep going with whatever built (-k 0); show the first errors
  if [ $rc != 0 ]; then grep -E "error|FAILED" "$W/build.log" | head -40; fi
  [ -x $B/tools/mo_bench ] || exit 1
fi

if has causal-vs-full; then  # six small runs at once, beside the CUDA tests
  prepare_fmnist >"$W/causal_vs_full.log" 2>&1
  rm -rf /tmp/causal_vs_full
  cvf_t0=$(date +%s)
  PARALLEL=1 BUILD=$B DATA=/tmp/fmnist OUT=/tmp/causal_vs_full timeout "${CVF_TIMEOUT:-3600}" \
    bash scripts/bench/causal_vs_full.sh >>"$W/causal_vs_full.log" 2>&1 &
  cvf_pid=$!
fi
join_causal_vs_full() {  # before anything timed (see has), and at the end
  [ -n "${cvf_pid:-}" ] || return 0
  wait "$cvf_pid"
  echo "causal-vs-full rc=$? after $(( $(date +%s) - cvf_t0 )) s"
  tail -6 "$W/causal_vs_full.log"
  mkdir -p "$W/causal_vs_full"
  cp /tmp/causal_vs_full/curves.svg "$W/causal_vs_full/" 2>/dev/null
  for d in /tmp/causal_vs_full/*/; do
    [ -f "$d/summary.csv" ] && cp "$d/summary.csv" "$W/causal_vs_full/$(basename "$d").csv"
    [ -f "$d/train.log" ] && tail -c 20000 "$d/train.log" >"$W/causal_vs_full/$(basename "$d").log"
  done
  cvf_pid=
}

if has tests; then
  ctest --test-dir $B -R "${TESTS_R:-Cuda}" -j "${TESTS_J:-1}" --output-on-failure --timeout 600 >"$W/cuda_tests.log" 2>&1
  echo "cuda tests rc=$?"
  grep -E "tests passed|Failed|FAILED|\*\*\*" "$W/cuda_tests.log" | head -40
fi

if has kernels && [ -x $B/tools/mo_bench_kernels ]; then
  if [ -z "${KERNELS_ONLY:-}" ]; then
    $B/tools/mo_bench_kernels >"$W/kernels.log" 2>&1
  else  # KERNELS_ONLY="gated attention": only the cases whose names contain one of these words
    : >"$W/kernels.log"
    for k in $KERNELS_ONLY; do $B/tools/mo_bench_kernels --only "$k" >>"$W/kernels.log" 2>&1; done
  fi
  echo "kernel bench rc=$?"; tail -40 "$W/kernels.log"
fi

bench() {  # name args...
  local tag=$1; shift
  timeout 300 "$@" --json >>"$W/bench.jsonl" 2>>"$W/bench_err.log" || echo "{\"tool\": \"$tag\", \"error\": \"rc=$?\"}" >>"$W/bench.jsonl"
}
# model batch mode dtype: the training rows of the GPU-speed issue, tiny inference, and fp32 (TF32 off)
specs=("mambaout_tiny 256 train bf16" "mambaout_femto 256 train bf16" "mambaout_small 128 train bf16"
       "mambaout_base 128 train bf16" "mambaout_tiny 256 infer bf16" "mambaout_tiny 128 train fp32")
if has bench; then  # mo and timm eager, alternating per row
  : >"$W/bench.jsonl"
  for spec in "${specs[@]}"; do
    set -- $spec
    bench mo $B/tools/mo_bench --device cuda --dtype $4 --model $1 --batch $2 --mode $3 --warmup 5 --iters 15
    timeout 300 python3 scripts/bench/peer_torch.py --device cuda --dtype $4 --model $1 --batch $2 --mode $3 \
      --warmup 5 --iters 15 >>"$W/bench.jsonl" 2>>"$W/bench_err.log"
  done
fi
if has bench-compile; then  # mo again beside each torch.compile peer, so every ratio comes from one call
  [ -f "$W/bench.jsonl" ] || : >"$W/bench.jsonl"
  for spec in "${specs[@]}"; do
    set -- $spec
    [ "$4" = bf16 ] || continue
    has bench || bench mo $B/tools/mo_bench --device cuda --dtype $4 --model $1 --batch $2 --mode $3 --warmup 5 --iters 15
    timeout 200 python3 scripts/bench/peer_torch.py --device cuda --dtype $4 --model $1 --batch $2 --mode $3 \
      --warmup 5 --iters 15 --compile >>"$W/bench.jsonl" 2>>"$W/bench_err.log"
  done
fi
if has peers-parallel; then
  [ -f "$W/bench.jsonl" ] || : >"$W/bench.jsonl"
  IFS=';' read -ra rows <<<"${PEER_ROWS:-mambaout_femto train 256 compile;mambaout_tiny train 256 compile;mambaout_small train 128 compile;mambaout_base train 128 compile;mambaout_tiny infer 256 compile}"
  bar=$(mktemp -d /tmp/mo_peers.XXXXXX)
  t0=$(date +%s)
  pids=()
  for row in "${rows[@]}"; do
    set -- $row
    timeout "${PEER_TIMEOUT:-560}" $PY scripts/bench/peer_torch.py --device "${PEER_DEVICE:-cuda}" --dtype "${PEER_DTYPE:-bf16}" \
      --model $1 --mode $2 --batch $3 --warmup 5 --iters 15 ${PEER_ARGS:-} $([ "$4" = compile ] && echo --compile) \
      --barrier "$bar" --barrier-n ${#rows[@]} >>"$W/bench.jsonl" 2>>"$W/peers_parallel_err.log" &
    pids+=($!)
  done
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || echo "{\"tool\": \"peer ${rows[$i]}\", \"error\": \"rc=$?\"}" >>"$W/bench.jsonl"
  done
  echo "peers-parallel: ${#rows[@]} peers in $(( $(date +%s) - t0 )) s (compiled together, timed in turn)"
  rm -rf "$bar"
  for row in "${rows[@]}"; do  # mo on the same rows, after the peers have gone (unless bench did them)
    set -- $row
    has bench || has bench-compile || bench mo $B/tools/mo_bench --device "${PEER_DEVICE:-cuda}" --dtype "${PEER_DTYPE:-bf16}" \
      --model $1 --batch $3 --mode $2 --warmup 5 --iters 15 ${MO_BENCH_ARGS:-}
  done
fi
if has fmnist-long; then  # recipes/fashion_mnist_long.yaml from scratch: the time and the final top-1
  R=/tmp/fmnist_long
  rm -rf "$R"
  prepare_fmnist >"$W/fmnist_long.log" 2>&1
  t0=$(date +%s.%N)
  # shellcheck disable=SC2086
  OMP_WAIT_POLICY=passive $B/tools/mo_train recipes/fashion_mnist_long.yaml --set data.root=/tmp/fmnist \
    --set train.output=$R ${FMNIST_EXTRA:-} >>"$W/fmnist_long.log" 2>&1
  rc=$?
  echo "fmnist-long rc=$rc: mo_train took $($PY -c "import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 1))" "$t0" "$(date +%s.%N)") s"
  grep -E "parameters|^done" "$W/fmnist_long.log" | head -3
  [ -f "$R/summary.csv" ] && cp "$R/summary.csv" "$W/fmnist_long_summary.csv" &&
    $PY - "$R/summary.csv" <<'PYEOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
r = rows[-1]
best = max(rows, key=lambda x: max(float(x["eval_top1"] or 0), float(x.get("eval_top1_ema") or 0)))
print(f"fmnist-long: {len(rows)} epochs; last epoch top-1 {r['eval_top1']}% (EMA {r.get('eval_top1_ema') or '-'}%), "
      f"train loss {r['train_loss']}; best epoch {best['epoch']}: {best['eval_top1']}% (EMA {best.get('eval_top1_ema') or '-'}%)")
PYEOF
fi
if has fmnist-ablation; then  # the long recipe without each of its regularisers, all variants at once
  prepare_fmnist >>"$W/fmnist_ablation.log" 2>&1
  declare -A abl=([full]="" [no-randaugment]="--set data.auto_augment=" [no-erasing]="--set data.reprob=0"
                  [no-smoothing]="--set data.smoothing=0" [32px]="--set data.img_size=32")
  pids=()
  for v in ${ABL_VARIANTS:-${!abl[@]}}; do
    [ -n "${abl[$v]+set}" ] || { echo "fmnist-ablation: no variant '$v' (${!abl[*]})"; continue; }
    rm -rf "/tmp/fmnist_abl_$v"
    # shellcheck disable=SC2086
    OMP_WAIT_POLICY=passive $B/tools/mo_train recipes/fashion_mnist_long.yaml --set data.root=/tmp/fmnist \
      --set train.output="/tmp/fmnist_abl_$v" --set sched.epochs=${ABL_EPOCHS:-30} --set data.workers=3 \
      ${abl[$v]} ${ABL_EXTRA:-} >"$W/fmnist_abl_$v.log" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
  $PY - ${ABL_VARIANTS:-${!abl[@]}} <<'PYEOF' | tee "$W/fmnist_ablation.md"
import csv, os, sys
print("| variant (all at once on one GPU) | epochs | last top-1 | EMA | best top-1 |")
print("|---|---|---|---|---|")
for v in sorted(sys.argv[1:]):
    path = f"/tmp/fmnist_abl_{v}/summary.csv"
    rows = list(csv.DictReader(open(path))) if os.path.exists(path) else []
    if not rows:
        print(f"| {v} | - | - | - | - |")
        continue
    r = rows[-1]
    best = max(float(x.get("eval_top1") or 0) for x in rows)
    print(f"| {v} | {len(rows)} | {r.get('eval_top1') or '-'} | {r.get('eval_top1_ema') or '-'} | {best:.2f} |")
PYEOF
fi
# (before peers-join: with peers-start it runs while the peers compile)
if has timm-local-dir; then  # mo_convert --hf-dir, then timm.create_model('local-dir:...', pretrained=True)
  ck=/tmp/fmnist_long/checkpoints/best.mo
  if [ ! -f "$ck" ]; then
    prepare_fmnist >"$W/timm_local_dir.log" 2>&1
    rm -rf /tmp/fmnist_quick
    $B/tools/mo_train recipes/fashion_mnist.yaml --set data.root=/tmp/fmnist --set train.output=/tmp/fmnist_quick \
      --set train.max_steps=${TIMM_CHECK_STEPS:-400} --set train.eval_every=0 >>"$W/timm_local_dir.log" 2>&1
    ck=$(ls /tmp/fmnist_quick/checkpoints/ckpt-*.mo 2>/dev/null | sort | tail -1)
  fi
  $PY scripts/gpu/check_timm_local_dir.py --bin $B/tools --ckpt "${ck:-none}" /tmp/fmnist/val >>"$W/timm_local_dir.log" 2>&1
  echo "timm local-dir check rc=$?"; tail -6 "$W/timm_local_dir.log"
fi
if has peers-join && [ -n "${pbar:-}" ]; then
  # wait until every peer is warm (ready, failed or gone), join the barrier, then time mo's rows in turn
  while :; do
    n=$(ls "$pbar" | grep -cE '\.(ready|failed)$')
    alive=0
    for p in "${ppids[@]}"; do kill -0 "$p" 2>/dev/null && alive=$((alive + 1)); done
    [ "$n" -ge "${#prows[@]}" ] || [ "$n" -ge "$alive" ] && break
    sleep 1
  done
  echo "peers warm after $(( $(date +%s) - pt0 )) s"
  touch "$pbar/lead.ready"
  for row in "${prows[@]}"; do
    set -- $row
    flock "$pbar/lock" timeout 300 $B/tools/mo_bench --device "${PEER_DEVICE:-cuda}" --dtype "${PEER_DTYPE:-bf16}" \
      --model $1 --batch $3 --mode $2 --warmup 5 --iters 15 --json >>"$W/bench.jsonl" 2>>"$W/bench_err.log" ||
      echo "{\"tool\": \"mo $row\", \"error\": \"rc=$?\"}" >>"$W/bench.jsonl"
  done
  for i in "${!ppids[@]}"; do
    wait "${ppids[$i]}" || echo "{\"tool\": \"peer ${prows[$i]}\", \"error\": \"rc=$?\"}" >>"$W/peers.jsonl"
  done
  cat "$W/peers.jsonl" >>"$W/bench.jsonl"
  echo "peers-join: done after $(( $(date +%s) - pt0 )) s"
  rm -rf "$pbar"
fi
if has profile; then  # where a step goes, per op (synchronised), for tiny and base
  for m in "mambaout_tiny 256" "mambaout_base 128"; do
    set -- $m
    $B/tools/mo_bench --device cuda --dtype bf16 --model $1 --batch $2 --mode train --warmup 3 --iters 5 --profile \
      >>"$W/profile.txt" 2>&1
  done
  grep -A24 "step parts" "$W/profile.txt" | head -60
fi
if has nsys && command -v nsys >/dev/null; then  # unsynchronised kernel times of a few tiny steps
  nsys profile -o /tmp/mo_tiny --force-overwrite true $B/tools/mo_bench --device cuda --dtype bf16 \
    --model mambaout_tiny --batch 256 --mode train --warmup 2 --iters 3 >/dev/null 2>&1
  nsys stats --report cuda_gpu_kern_sum --format csv /tmp/mo_tiny.nsys-rep 2>/dev/null |
    python3 -c "import csv,sys; r=list(csv.DictReader(sys.stdin)); [print(f\"{float(x['Total Time (ns)'])/5e6:8.2f} ms/step {int(x['Instances'])//5:5d}x  {x['Name'][:110]}\") for x in r[:40]]" \
    | tee "$W/nsys_kernels.txt"
fi
if has nsys-infer && command -v nsys >/dev/null; then  # the same for tiny inference
  nsys profile -o /tmp/mo_tiny_infer --force-overwrite true $B/tools/mo_bench --device cuda --dtype bf16 \
    --model mambaout_tiny --batch 256 --mode infer --warmup 2 --iters 5 >/dev/null 2>&1
  nsys stats --report cuda_gpu_kern_sum --format csv /tmp/mo_tiny_infer.nsys-rep 2>/dev/null |
    python3 -c "import csv,sys; r=list(csv.DictReader(sys.stdin)); [print(f\"{float(x['Total Time (ns)'])/7e6:8.2f} ms/batch {int(x['Instances'])//7:5d}x  {x['Name'][:110]}\") for x in r[:40]]" \
    | tee "$W/nsys_infer_kernels.txt"
fi
if has infer-graph; then  # the CUDA-graph experiment: tiny inference at batch 256 and 1, eager and replayed
  [ -f "$W/bench.jsonl" ] || : >"$W/bench.jsonl"
  for b in 256 1; do
    bench mo $B/tools/mo_bench --device cuda --dtype bf16 --model mambaout_tiny --batch $b --mode infer --warmup 5 \
      --iters 15 --graph
  done
  grep infer "$W/bench.jsonl" | tail -4; grep "graph:" "$W/bench_err.log" | tail -2
fi
if has vit-bench; then  # ViT-S/16 training beside timm eager, and the attention kernel beside SDPA
  [ -f "$W/bench.jsonl" ] || : >"$W/bench.jsonl"
  bench mo $B/tools/mo_bench --device cuda --dtype bf16 --model vit_small_patch16_224 --batch 256 --mode train --warmup 5 --iters 15
  [ "${VIT_PEER:-1}" = 0 ] || timeout 300 python3 scripts/bench/peer_torch.py --device cuda --dtype bf16 \
    --model vit_small_patch16_224 --batch 256 --mode train --warmup 5 --iters 15 >>"$W/bench.jsonl" 2>>"$W/bench_err.log"
  { $B/tools/mo_bench_kernels --only attention; python3 scripts/bench/sdpa_peer.py; } >"$W/attention.log" 2>&1
  echo "vit-bench:"; tail -2 "$W/bench.jsonl"; cat "$W/attention.log"
fi
if has data-e2e; then  # mo_train on a JPEG ImageFolder, CPU and GPU decode, beside mo_bench's synthetic rate
  J=/tmp/jpeg_folder
  python3 scripts/data/make_jpeg_folder.py "$J" >"$W/data_e2e.log" 2>&1
  [ -f "$W/bench.jsonl" ] || : >"$W/bench.jsonl"
  e2e_from=$(wc -l <"$W/bench.jsonl")  # the summary below is of this stage's rows (W may hold earlier ones)
  for m in ${E2E_MODELS:-mambaout_femto mambaout_tiny}; do
    bench mo $B/tools/mo_bench --device cuda --dtype bf16 --model $m --batch 256 --mode train --warmup 5 --iters 15
    for dec in ${E2E_DECODERS-synthetic cpu gpu}; do  # synthetic: the same run, no file read (data.synthetic)
      for wk in ${E2E_WORKERS:-16}; do  # E2E_WORKERS: one or more worker counts
        R=/tmp/e2e_${m}_${dec}_$wk
        L="$W/e2e_${m}_${dec}$([ "$wk" = 16 ] || echo "_w$wk")${E2E_TAG:+_$E2E_TAG}.log"
        rm -rf "$R"
        if [ $dec = synthetic ]; then src=(--set data.synthetic=true); else src=(--set data.decoder=$dec); fi
        timeout 300 $B/tools/mo_train "recipes/${m#mambaout_}.yaml" --set data.root="$J" --set model.num_classes=10 \
          "${src[@]}" --set data.workers=$wk --set train.batch_size=256 \
          --set train.global_batch=256 --set train.max_steps=${E2E_STEPS:-100} --set train.eval_every=0 \
          --set log.progress=lines --set log.every_steps=1 --set log.tensorboard=false --set train.output="$R" \
          ${E2E_EXTRA:-} >"$L" 2>&1
        echo "data-e2e $m $dec workers $wk rc=$?"
        python3 - "$L" "$m" "$dec" "$wk" <<'PYEOF' | tee -a "$W/bench.jsonl"
import json, os, re, statistics, sys
path, model, dec, wk = sys.argv[1:]
steps = [float(x) for x in re.findall(r"step \d+/\d+ \(\d+\).*? ([0-9.]+) img/s", open(path).read())]
tool = ("mo_train synthetic" if dec == "synthetic" else f"mo_train jpeg {dec}") + ("" if wk == "16" else f" {wk} workers")
tool += f" {os.environ['E2E_TAG']}" if os.environ.get("E2E_TAG") else ""
print(json.dumps({"tool": tool, "model": model, "mode": "train", "batch": 256, "dtype": "bf16",
                  "device": "cuda", "images_per_s": round(statistics.median(steps[10:]), 1) if len(steps) > 10 else 0,
                  "peak_gib": None, "steps_seen": len(steps)}))
PYEOF
        grep -h "input:" "$R/log.txt" "$L" 2>/dev/null | tail -1
      done
    done
  done
  # each of this stage's mo_train rows against mo_train synthetic (same model and workers; the same E2E_TAG
  # where this stage ran one, else the latest, e.g. an earlier stage's untagged run)
  python3 - "$W/bench.jsonl" "$e2e_from" "${E2E_TAG:-}" <<'PYEOF'
import json, re, sys
lines = open(sys.argv[1]).read().splitlines()
start, tag = int(sys.argv[2]), sys.argv[3]
parse = lambda ls: [json.loads(l) for l in ls if l.startswith("{") and "mo_train" in l]
rows, new = parse(lines), parse(lines[start:])
workers = lambda r: (re.findall(r" (\d+) workers", r["tool"]) or ["16"])[0]
tagged = lambda r: r["tool"].endswith(f" {tag}") if tag else True
for r in new:
    if r["tool"].startswith("mo_train synthetic"):
        continue
    base = [b for b in rows if b["model"] == r["model"] and b["tool"].startswith("mo_train synthetic")
            and workers(b) == workers(r)]
    base = [b for b in base if tagged(b)] or base
    if base and base[-1]["images_per_s"] > 0:
        print(f"data-e2e: {r['model']} {r['tool']}: {r['images_per_s']:.0f} img/s = "
              f"{100 * r['images_per_s'] / base[-1]['images_per_s']:.1f}% of synthetic ({base[-1]['images_per_s']:.0f})")
PYEOF
  # The step beside a loader at its full rate (mo_bench --loader): the same mo_bench alone, then with the
  # loader on J delivering training batches beside it (cpu and gpu decoder, 16 workers); the step's slowdown
  # and the images/s the loader delivered. OVERLAP_ITERS timed steps (a loader warm-up of 40 steps first).
  [ -z "${E2E_OVERLAP-cpu gpu}" ] || : >"$W/overlap.jsonl"  # this stage's rows only
  for m in $([ -n "${E2E_OVERLAP-cpu gpu}" ] && echo ${E2E_MODELS:-mambaout_femto mambaout_tiny}); do
    for ld in none ${E2E_OVERLAP-cpu gpu}; do
      IFS=';' read -ra groups <<<"${OVERLAP_SETS:-}"  # each group: one more row per decoder, its --loader-set keys
      [ $ld != none ] && [ ${#groups[@]} -gt 0 ] || groups=("")
      for grp in "${groups[@]}"; do
        args=(--device cuda --dtype bf16 --model $m --batch 256 --mode train --warmup 40 --iters ${OVERLAP_ITERS:-300} --json
          ${OVERLAP_BENCH_ARGS:-})
        [ $ld = none ] || args+=(--loader "$J" --loader-decoder $ld --loader-workers 16)
        for kv in $grp; do args+=(--loader-set "$kv"); done
        timeout 300 $B/tools/mo_bench "${args[@]}" >>"$W/overlap.jsonl" 2>>"$W/bench_err.log" || echo "overlap $m $ld $grp rc=$?"
      done
    done
  done
  python3 - "$W/overlap.jsonl" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
for r in rows:
    alone = [b for b in rows if b["model"] == r["model"] and "loader" not in b]
    if "loader" in r and alone:
        a = alone[-1]["images_per_s"]
        print(f"overlap: {r['model']} step {r['images_per_s']:.0f} img/s beside the loader ({r['loader']}), alone {a:.0f}: "
              f"{100 * (1 - r['images_per_s'] / a):+.1f}% slower; the loader ({r.get('loader_sets') or 'defaults'}) "
              f"delivered {r['loader_images_per_s']:.0f} img/s; {r.get('loader_stats', '')}")
PYEOF
fi
if has demo; then  # the README's main job on the GPU: Fashion-MNIST, recipes/fashion_mnist.yaml as written
  t0=$(date +%s)
  SKIP_INSTALL=1 BUILD=$B DATA=/tmp/fmnist OUT=/tmp/fmnist_run FMNIST_SRC=${FMNIST_SRC:-} bash scripts/train/demo.sh >"$W/demo.log" 2>&1
  echo "demo rc=$? in $(( $(date +%s) - t0 )) s"
  grep -iE "top-1|top1|acc|images/s|real" "$W/demo.log" | tail -12
fi
if has data; then  # JPEG pipeline scaling with worker threads, and the PIL/torchvision peer on one thread
  python3 scripts/data/make_bench_images.py /tmp/bench_jpeg 200 >/dev/null 2>&1
  { lscpu | grep -E 'Model name|^CPU\(s\)|Thread|MHz'; echo "vector ISA: $(grep -o -w 'avx2\|fma\|avx512f\|avx512bw' /proc/cpuinfo | sort -u | tr '\n' ' ')"
    $B/tools/mo_bench_data --dir /tmp/bench_jpeg --threads 1,2,4,8,16 --seconds 3 --modes train,eval
    # the stage split of one core (which stage the host's slower cores pay for)
    $B/tools/mo_bench_data --dir /tmp/bench_jpeg --threads 1 --seconds 3 --modes decode,rrc,train --profile; } >"$W/data_bench.log" 2>&1
  python3 scripts/data/bench_peer.py /tmp/bench_jpeg --seconds 3 >>"$W/data_bench.log" 2>&1
  cat "$W/data_bench.log" | tail -30
fi
wait_listening() {  # LOG PID: the port a server printed ("listening on http://HOST:PORT/"), within 180 s
  for _ in $(seq 360); do
    grep -qo "listening on http://[^ ]*:[0-9]*" "$1" && { grep -o "listening on http://[^ ]*" "$1" | head -1 | sed 's|.*:\([0-9]*\)/.*|\1|'; return 0; }
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.5
  done
  return 1
}
stop_server() { kill "$1" 2>/dev/null; wait "$1" 2>/dev/null; }
bench_server() {  # LABEL LOG PID head|tail: serve_bench (options SB) against the server PID that prints its port to LOG
  local port
  if port=$(wait_listening "$2" "$3"); then
    $4 -3 "$2"
    timeout 400 $PY scripts/bench/serve_bench.py --url "http://127.0.0.1:$port/predict" "${SB[@]}" --label "$1" \
      >>"$W/serve.jsonl" || echo "{\"server\": \"$1\", \"error\": \"serve_bench rc=$?\"}" >>"$W/serve.jsonl"
  else
    echo "serve: the $1 server did not start:"; tail -5 "$2"
  fi
  stop_server "$3"
}
if has serve; then  # mo_serve against a plain timm server, same weights, same images, same call
  if [ ! -x $B/tools/mo_serve ]; then
    cmake -S . -B $B "${CMAKE_EXTRA[@]}" >>"$W/build.log" 2>&1 && ninja -C $B mo_serve >>"$W/build.log" 2>&1
  fi
  S=$(mktemp -d /tmp/mo_serve_bench.XXXXXX)
  model=${SERVE_MODEL:-mambaout_tiny}
  : >"$W/serve.jsonl"
  if [ ! -x $B/tools/mo_serve ]; then
    echo "serve: no $B/tools/mo_serve (cpp-httplib not found: scripts/gpu/stage_httplib.sh, carry .deps/httplib)"
  else
    $PY - "$S/img" <<'PYEOF'  # 16 224x224 JPEGs: the test photos, centre and offset squares, mirrored
import glob, os, sys
from PIL import Image, ImageOps
out = sys.argv[1]
os.makedirs(out)
for f in sorted(glob.glob("tests/data/images/*.jpg")):
    im = Image.open(f).convert("RGB")
    for k, c in enumerate([(0.5, 0.5), (0.3, 0.4)]):
        v = ImageOps.fit(im, (224, 224), Image.BICUBIC, centering=c)
        for j, w in enumerate([v, ImageOps.mirror(v)]):
            w.save(os.path.join(out, f"{os.path.basename(f)[:-4]}_{k}{j}.jpg"), quality=90)
PYEOF
    $PY scripts/bench/serve_peer_timm.py --model "$model" --save-weights "$S/w.pth" ${SERVE_PEER_ARGS:-} >"$W/serve_peer.log" 2>&1
    cat "$W/serve_peer.log"
  fi
  if [ ! -x $B/tools/mo_serve ]; then
    :
  elif [ ! -f "$S/w.pth" ]; then
    echo "serve: no weights to serve (serve_peer_timm.py --save-weights failed, above)"
  else
    SB=(--images "$S/img" --concurrency "${SERVE_CONC:-1,16,128}" --requests "${SERVE_REQUESTS:-2000}")
    $B/tools/mo_serve -w "$S/w.pth" -m "$model" --port 0 --device "${SERVE_DEVICE:-cuda}" \
      ${SERVE_MO_ARGS:---idle-timeout 120} >"$W/serve_mo.log" 2>&1 &
    bench_server mo "$W/serve_mo.log" $! head
    # the peer preprocesses as mo_serve said it does (its /health, recorded by serve_bench)
    pre=$($PY -c "import json,sys; h=[json.loads(l) for l in open(sys.argv[1]) if '\"health\"' in l][0]['health']['preprocess']; print(h['img_size'], h['crop_pct'], h['interpolation'])" "$W/serve.jsonl" 2>/dev/null || echo "224 0.875 bicubic")
    set -- $pre
    $PY scripts/bench/serve_peer_timm.py --model "$model" --weights "$S/w.pth" --port 0 --device "${SERVE_DEVICE:-cuda}" \
      --img-size $1 --crop-pct $2 --interpolation $3 ${SERVE_PEER_ARGS:-} >>"$W/serve_peer.log" 2>&1 &
    bench_server peer "$W/serve_peer.log" $! tail
    $PY scripts/bench/serve_table.py "$W/serve.jsonl" | tee "$W/serve.md"
  fi
  rm -rf "$S"
fi
join_causal_vs_full
[ -f "$W/bench.jsonl" ] && python3 scripts/bench/table.py "$W/bench.jsonl" | tee "$W/table.md"
