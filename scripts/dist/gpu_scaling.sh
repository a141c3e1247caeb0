#!/usr/bin/env bash
# gpu_scaling.sh: mo's data parallelism on 1 to 8 GPUs of one host next to PyTorch DDP, a simulated
# two-node run with a sweep of the gradient bucket size, and a rank killed at 8 ranks, then resumed.
# Made for one device call on nvidia-h200-x8 (on -x4 the rank counts stop at 4); from the repository root:
#   bash scripts/dist/gpu_scaling.sh                    # every stage below, in this order
#   bash scripts/dist/gpu_scaling.sh synthetic peer     # some (build runs anyway when a binary is missing)
# Stages, with the time each is expected to take on nvidia-h200-x8 (estimates from the two-GPU runs of
# BENCHMARKS.md §2, not measurements; about 9 min in all, inside one 10-minute call):
#   build      cmake + ninja of mo_train, tests/mpi_test_scaling and tests/mpi_test_nccl in $B    ~90 s
#   synthetic  the trainer's step on random inputs (mpi_test_scaling, MO_DIST_BENCH=1) under mpirun -np N
#              for N in $NS and each batch per GPU in $BATCHES, global batch $GLOBAL by accumulation ~75 s
#   peer       torchrun --nproc_per_node N scripts/dist/ddp_peer.py (timm, bf16, DDP), the same shapes
#              (python3 -m torch.distributed.run: the same program, whichever python3 holds torch)  ~120 s
#   jpeg       mpirun -np N mo_train recipes/tiny.yaml on a generated JPEG ImageFolder (the full recipe
#              transform, $WORKERS decode threads per rank): img/s per step, and from the epoch's `input:`
#              line the step time against the time the step waited for batches                     ~90 s
#   fault      $FAULT_NP ranks of mo_train ($FAULT_STEPS steps, a checkpoint every 2): an uninterrupted run;
#              a run whose rank $FAULT_RANK is killed (SIGKILL) in the step after the first checkpoint,
#              timed from the kill until mpirun has exited, its output checked for the rank's number;
#              that run resumed (train.resume=auto) and its last checkpoint and step losses compared
#              with the uninterrupted run's, bit for bit                                             ~45 s
#   twonode    mpi_test_scaling on all GPUs at the first of BATCHES per GPU, for each bucket size in
#              BUCKETS (MiB, the recipe key ddp.bucket_mb), on three NCCL transports:
#                nvlink   NCCL's choice (P2P over NVLink)
#                sockets  NCCL_P2P_DISABLE=1 NCCL_SHM_DISABLE=1 NCCL_IB_DISABLE=1: every pair over TCP
#                twohost  NCCL_HOSTID per half (scripts/dist/rank_exec.sh), NCCL_IB_DISABLE=1 and
#                         NCCL_MNNVL_ENABLE=0: NVLink inside each half, TCP sockets between the halves
#                         only, as on two nodes
#              then mpi_test_nccl's all-reduce bandwidth on each transport. NCCL_DEBUG=INFO: the
#              transport of every connection is counted in the results                          ~110 s
# Everything goes to $WORK: a log per run, results.jsonl (a JSON line per run, scripts/dist/scaling_report.py
# parses the logs) and table.md. After every stage $OUT gets dist.tgz (the work folder without checkpoints
# and images), results.jsonl and table.md, so a call stopped at its limit still returns what was done; a
# run that would start after BUDGET_S seconds is skipped and said so. The tables are printed last.
# Environment (the DEVICE=cpu defaults in brackets):
#   DEVICE (cuda | cpu: CPU ranks, MPI backend, the peer on gloo with tests/reference/mambaout_ref.py, a
#     check of this script's plumbing)  NS (1 2 4 8, only counts <= the GPUs visible [1 2])
#   MODEL (mambaout_tiny [mambaout_femto])  IMG (224 [64])  BATCHES (256 128 [8 4])  GLOBAL (4096 [32])
#   STEPS (6 timed optimizer steps [2])  WARMUP (2 [1])  WORKERS (16 per rank [1])  JPEG_STEPS (6 [3])
#   JPEG_PER_CLASS (2560 [32]: 10 classes)  BUCKETS (4 25 100 [1 4 25])  FAULT_NP (largest of NS)
#   FAULT_RANK (FAULT_NP / 2)  FAULT_BATCH (128 [4])  FAULT_STEPS (6)  BUDGET_S (570 [3600])
#   OUT (/tmp/mo_out)  WORK (/tmp/mo_dist)  B (build-gpu [build])  JOBS (nproc [2])  JPEG_DIR ($WORK/jpeg)
#   SOCKET_IFNAME (lo: the interface of the simulated runs' TCP traffic)  PY (python3 [/usr/bin/python3: torch])
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
DEVICE=${DEVICE:-cuda}
case $DEVICE in
  cuda) cpu=0 ;;
  cpu) cpu=1 ;;
  *) echo "gpu_scaling: DEVICE is '$DEVICE', not cuda or cpu"; exit 2 ;;
esac
for tool in mpirun timeout tar; do
  command -v $tool >/dev/null || { echo "gpu_scaling: '$tool' is not on the PATH"; exit 1; }
done
pick() { if [ $cpu = 1 ]; then echo "$2"; else echo "$1"; fi; }  # pick GPU_DEFAULT CPU_DEFAULT
OUT=${OUT:-/tmp/mo_out}
W=${WORK:-/tmp/mo_dist}
mkdir -p "$OUT" "$W"
W=$(cd "$W" && pwd)
# NVLink multicast (NVLS) stays off on these machines, for NCCL, PyTorch and NVSHMEM alike.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
NS=${NS:-$(pick "1 2 4 8" "1 2")}
MODEL=${MODEL:-$(pick mambaout_tiny mambaout_femto)}
IMG=${IMG:-$(pick 224 64)}
BATCHES=${BATCHES:-$(pick "256 128" "8 4")}
GLOBAL=${GLOBAL:-$(pick 4096 32)}
STEPS=${STEPS:-$(pick 6 2)}
WARMUP=${WARMUP:-$(pick 2 1)}
WORKERS=${WORKERS:-$(pick 16 1)}
JPEG_STEPS=${JPEG_STEPS:-$(pick 6 3)}
JPEG_PER_CLASS=${JPEG_PER_CLASS:-$(pick 2560 32)}
JPEG_DIR=${JPEG_DIR:-$W/jpeg}
BUCKETS=${BUCKETS:-$(pick "4 25 100" "1 4 25")}
FAULT_BATCH=${FAULT_BATCH:-$(pick 128 4)}
FAULT_STEPS=${FAULT_STEPS:-6}
BUDGET_S=${BUDGET_S:-$(pick 570 3600)}
B=${B:-$(pick build-gpu build)}
JOBS=${JOBS:-$(pick "$(getconf _NPROCESSORS_ONLN)" 2)}
SOCKET_IFNAME=${SOCKET_IFNAME:-lo}
PY=${PY:-$(pick python3 /usr/bin/python3)}
stages=${*:-build synthetic peer jpeg fault twonode}
has() { [[ " $stages " == *" $1 "* ]]; }
# --bind-to none: Open MPI would pin each rank to one core, starving the loader's worker threads.
MPIRUN="mpirun --allow-run-as-root --oversubscribe --bind-to none"
REPORT="$PY scripts/dist/scaling_report.py"
RESULTS=$W/results.jsonl
: >"$RESULTS"
T0=$(date +%s)
left() { echo $(( BUDGET_S - ($(date +%s) - T0) )); }
# go NAME: whether a run may start (15 s of the budget left); else the skip goes into the results.
go() {
  [ "$(left)" -ge 15 ] && return 0
  echo "{\"what\": \"skipped\", \"run\": \"$1\", \"why\": \"$(left) s of BUDGET_S=$BUDGET_S left\"}" >>"$RESULTS"
  echo "skipped: $1 (time budget)"
  return 1
}
lim() { echo $(( $(left) > 10 ? $(left) : 10 )); }  # a run's timeout: the rest of the budget
pack() {
  $REPORT table "$RESULTS" >"$W/table.md" 2>>"$W/report_errors.log"
  local base; base=$(basename "$W")
  tar -C "$(dirname "$W")" --exclude='*.mo' --exclude="$base/jpeg" -czf "$OUT/dist.tgz.part" "$base" &&
    mv "$OUT/dist.tgz.part" "$OUT/dist.tgz"
  cp "$RESULTS" "$W/table.md" "$OUT/"
  echo "[$(( $(date +%s) - T0 )) s] packed after $1"
}

if [ $cpu = 1 ]; then
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
  ngpu=$(echo $NS | tr ' ' '\n' | sort -n | tail -1)
  { echo "CPU ranks: $(getconf _NPROCESSORS_ONLN) cores, $(uname -m)"; mpirun --version | head -1; } >"$W/machine.txt"
else
  ngpu=$(nvidia-smi -L 2>/dev/null | wc -l)
  if [ "$ngpu" -lt 1 ]; then
    echo "gpu_scaling: no GPU visible (nvidia-smi -L); DEVICE=cpu runs the stages on CPU ranks"
    exit 1
  fi
  { nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader; nvidia-smi topo -m
    echo "$(getconf _NPROCESSORS_ONLN) cores"; mpirun --version | head -1; ldconfig -p | grep -m2 libnccl
    $PY -c 'import torch, timm; print("torch", torch.__version__, "nccl", torch.cuda.nccl.version(),
      "timm", timm.__version__)'
  } >"$W/machine.txt" 2>&1
fi
NS=$(for n in $NS; do [ "$n" -le "$ngpu" ] && echo "$n"; done | tr '\n' ' ')
NP_MAX=$(echo $NS | tr ' ' '\n' | sort -n | tail -1)
FAULT_NP=${FAULT_NP:-$NP_MAX}
FAULT_RANK=${FAULT_RANK:-$(( FAULT_NP / 2 ))}
echo "gpu_scaling: DEVICE=$DEVICE, ranks: $NS; $MODEL at $IMG px, batches per GPU: $BATCHES, global $GLOBAL; work in $W"
cat "$W/machine.txt"

missing=$(for f in tools/mo_train tests/mpi_test_scaling tests/mpi_test_nccl; do [ -x "$B/$f" ] || echo "$f"; done)
if has build || [ -n "$missing" ]; then
  t0=$(date +%s)
  if [ $cpu = 1 ]; then
    flags="-DMO_WITH_CUDA=OFF"
    command -v ccache >/dev/null &&
      flags="$flags -DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache"
  else
    flags="-DCMAKE_CUDA_ARCHITECTURES=90"
  fi
  cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release $flags >"$W/build.log" 2>&1 &&
    nice ninja -C "$B" -j"$JOBS" mo_train mpi_test_scaling mpi_test_nccl >>"$W/build.log" 2>&1
  rc=$?
  echo "build rc=$rc in $(( $(date +%s) - t0 )) s; $(grep -m1 'NCCL backend' "$W/build.log")"
  if [ $rc != 0 ]; then grep -E "error|FAILED" "$W/build.log" | head -40; pack build; exit 1; fi
  pack build
fi

# accum NP BATCH: the accumulation that makes the global batch, or nothing when it does not divide
accum() { local d=$(( $1 * $2 )); [ $(( GLOBAL % d )) = 0 ] && echo $(( GLOBAL / d )); }
bench_env() {  # the settings of mpi_test_scaling: batch, accumulation
  echo "MO_DIST_BENCH=1 MO_DIST_BENCH_DEVICE=$DEVICE MO_DIST_BENCH_MODEL=$MODEL MO_DIST_BENCH_IMG=$IMG" \
    "MO_DIST_BENCH_BATCH=$1 MO_DIST_BENCH_ACCUM=$2 MO_DIST_BENCH_STEPS=$STEPS MO_DIST_BENCH_WARMUP=$WARMUP"
}

if has synthetic; then
  for batch in $BATCHES; do
    for np in $NS; do
      a=$(accum $np $batch) || { echo "synthetic: $GLOBAL is not a multiple of $np x $batch"; continue; }
      go "synthetic np=$np batch=$batch" || continue
      log=$W/synthetic_b${batch}_np$np.log
      env $(bench_env $batch $a) timeout -k 5 "$(lim)" $MPIRUN -np $np "$B/tests/mpi_test_scaling" >"$log" 2>&1
      echo "synthetic np=$np batch=$batch x $a rc=$?"
      $REPORT rows "$log" global=$GLOBAL | tee -a "$RESULTS"
    done
  done
  pack synthetic
fi

if has peer; then
  # Debian's torch 1.13 on Python 3.11 cannot launch with torchrun's default --redirects 0 (its Std enum
  # lost NONE); --redirects 1 --tee 1 keeps each rank's stdout on the console, prefixed "[default0]:".
  targs=$(pick "" "--redirects 1 --tee 1 --log_dir $W/torchrun_logs")
  for np in $NS; do
    shapes=""
    for batch in $BATCHES; do a=$(accum $np $batch) && shapes="$shapes${shapes:+,}${batch}x$a"; done
    [ -n "$shapes" ] || continue
    go "peer np=$np" || continue
    rm -rf "$W/torchrun_logs"
    log=$W/peer_np$np.log
    timeout -k 5 "$(lim)" $PY -m torch.distributed.run --standalone --nproc_per_node=$np $targs \
      scripts/dist/ddp_peer.py --device $DEVICE --model $MODEL --img $IMG --shapes $shapes --warmup $WARMUP \
      --steps $STEPS >"$log" 2>&1
    echo "torch ddp np=$np ($shapes) rc=$?"
    $REPORT rows "$log" global=$GLOBAL | tee -a "$RESULTS"
  done
  pack peer
fi

# train_args OUTPUT_DIR BATCH STEPS [ARG...]: mo_train's arguments for the JPEG folder into the array TA
# (every key not set here: recipes/tiny.yaml)
train_args() {
  TA=(recipes/tiny.yaml --set "data.root=$JPEG_DIR" --set model.name=$MODEL --set model.num_classes=10
    --set data.img_size=$IMG --set train.batch_size=$2 --set train.global_batch=$GLOBAL
    --set train.steps_per_epoch=$3 --set train.max_steps=$3 --set train.eval_every=0 --set data.workers=$WORKERS
    --set log.progress=lines --set log.every_steps=1 --set log.tensorboard=false --set "train.output=$1" "${@:4}")
}
make_jpegs() {
  [ -d "$JPEG_DIR/train" ] && return 0
  # 200 distinct 500x375 JPEGs hard-linked into 10 classes, so that every rank reads real JPEGs through the
  # full recipe transform (scripts/data/make_jpeg_folder.py)
  $PY scripts/data/make_jpeg_folder.py "$JPEG_DIR" --classes 10 --per-class "$JPEG_PER_CLASS" >"$W/jpeg_make.log" 2>&1
}

if has jpeg || has fault; then
  make_jpegs || { echo "gpu_scaling: could not make the JPEG folder (see $W/jpeg_make.log)"; }
fi

if has jpeg; then
  for batch in $BATCHES; do
    for np in $NS; do
      accum $np $batch >/dev/null || continue
      go "jpeg np=$np batch=$batch" || continue
      run=$W/jpeg_run_b${batch}_np$np
      rm -rf "$run"  # a fresh run each time (mo_train will not start over a run's checkpoints)
      log=$W/jpeg_b${batch}_np$np.log
      train_args "$run" $batch $JPEG_STEPS
      timeout -k 5 "$(lim)" $MPIRUN -np $np "$B/tools/mo_train" "${TA[@]}" >"$log" 2>&1
      echo "jpeg np=$np batch=$batch rc=$?"
      $REPORT jpeg "$log" $np $batch model=$MODEL workers=$WORKERS global=$GLOBAL | tee -a "$RESULTS"
      rm -f "$run"/checkpoints/*.mo  # not needed again: disk for the next runs
    done
  done
  pack jpeg
fi

if has fault && [ "$FAULT_NP" -lt 2 ]; then echo "fault: needs 2 ranks or more (FAULT_NP=$FAULT_NP)"; fi
if has fault && [ "$FAULT_NP" -ge 2 ] && go "fault np=$FAULT_NP"; then
  args() { train_args "$1" $FAULT_BATCH $FAULT_STEPS --set ckpt.every_steps=2 "${@:2}"; }
  ref=$W/fault_ref fr=$W/fault_run pids=$W/fault_pids
  rm -rf "$ref" "$fr" "$pids" && mkdir -p "$pids"
  args "$ref"
  timeout -k 5 "$(lim)" $MPIRUN -np $FAULT_NP "$B/tools/mo_train" "${TA[@]}" >"$W/fault_ref.log" 2>&1
  echo "fault: uninterrupted run rc=$?"
  # The faulty run: rank FAULT_RANK killed as soon as step 3 is logged (the checkpoint of step 2 exists),
  # in the middle of step 4.
  args "$fr"
  PID_DIR=$pids timeout -k 5 "$(lim)" $MPIRUN -np $FAULT_NP bash scripts/dist/rank_exec.sh "$B/tools/mo_train" \
    "${TA[@]}" >"$W/fault_kill.log" 2>&1 &
  job=$!
  ready() { grep -q " step 3/" "$fr/log.txt" 2>/dev/null && [ -s "$pids/rank$FAULT_RANK.pid" ]; }
  until ready || ! kill -0 $job 2>/dev/null; do sleep 0.05; done
  t_kill=$(date +%s.%N)
  if kill -KILL "$(cat "$pids/rank$FAULT_RANK.pid" 2>/dev/null)" 2>/dev/null; then
    echo "fault: killed rank $FAULT_RANK after $(ls "$fr/checkpoints" 2>/dev/null | tr '\n' ' ')"
  else
    echo "fault: rank $FAULT_RANK was not running any more (the run ended first?)"
  fi
  wait $job
  rc=$?
  exit_s=$($PY -c "import sys; print(round($(date +%s.%N) - $t_kill, 2))")
  echo "fault: the job ended ${exit_s} s after the kill, rc=$rc"
  if go "fault resume"; then
    args "$fr" --set train.resume=auto
    timeout -k 5 "$(lim)" $MPIRUN -np $FAULT_NP "$B/tools/mo_train" "${TA[@]}" >"$W/fault_resume.log" 2>&1
    echo "fault: resumed run rc=$? ($(grep -m1 -o 'resumed from .*' "$W/fault_resume.log"))"
  fi
  $REPORT fault "$ref" "$fr" "$W/fault_kill.log" $FAULT_RANK "$exit_s" $rc world=$FAULT_NP batch=$FAULT_BATCH \
    | tee -a "$RESULTS"
  pack fault
fi

# transport_env NAME: the variables of a transport of the twonode stage (see the header)
transport_env() {
  local sock="NCCL_IB_DISABLE=1 NCCL_SOCKET_IFNAME=$SOCKET_IFNAME"
  case $1 in
    nvlink) echo "" ;;
    sockets) echo "NCCL_P2P_DISABLE=1 NCCL_SHM_DISABLE=1 $sock" ;;
    twohost) echo "RANKS_PER_HOST=$(( NP_MAX / 2 )) NCCL_MNNVL_ENABLE=0 $sock" ;;
  esac
}

if has twonode; then
  batch=${BATCHES%% *}
  if [ "$NP_MAX" -lt 2 ] || [ $(( NP_MAX % 2 )) != 0 ] || ! a=$(accum $NP_MAX $batch); then
    echo "twonode: needs an even number of ranks (largest of NS: $NP_MAX) that divides the global batch"
  else
    for transport in nvlink sockets twohost; do
      for mb in $BUCKETS; do
        go "twonode $transport bucket=$mb" || continue
        log=$W/twonode_${transport}_bucket$mb.log
        env $(bench_env $batch $a) MO_DIST_BENCH_BUCKET_MB=$mb NCCL_DEBUG=INFO NCCL_DEBUG_SUBSYS=INIT \
          $(transport_env $transport) timeout -k 5 "$(lim)" $MPIRUN -np $NP_MAX bash scripts/dist/rank_exec.sh \
          "$B/tests/mpi_test_scaling" >"$log" 2>&1
        echo "twonode $transport bucket=$mb MiB rc=$?"
        $REPORT rows "$log" transport=$transport global=$GLOBAL | tee -a "$RESULTS"
      done
    done
    # The all-reduce bandwidth of each transport (mpi_test_nccl: 25 and 256 MiB), last: the first thing
    # left out when time runs short. It skips on CPU ranks.
    for transport in nvlink sockets twohost; do
      go "allreduce $transport" || continue
      log=$W/allreduce_$transport.log
      env NCCL_DEBUG=INFO NCCL_DEBUG_SUBSYS=INIT $(transport_env $transport) timeout -k 5 "$(lim)" \
        $MPIRUN -np $NP_MAX bash scripts/dist/rank_exec.sh "$B/tests/mpi_test_nccl" \
        --gtest_filter=CudaNccl.AllReduceBandwidth >"$log" 2>&1
      echo "allreduce $transport rc=$?"
      $REPORT rows "$log" transport=$transport world=$NP_MAX | tee -a "$RESULTS"
    done
  fi
  pack twonode
fi

pack end
echo "[$(( $(date +%s) - T0 )) s] done; $W/table.md:"
cat "$W/table.md"
