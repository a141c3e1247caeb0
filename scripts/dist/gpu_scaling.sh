#!/usr/bin/env bash
# gpu_scaling.sh: two-GPU scaling of mo's data parallelism next to PyTorch DDP on the same machine
# (targets.md: images/s on 2 GPUs ÷ 2 × one GPU ≥ 99%). Run on the two-GPU machine from the repository
# root; full logs go to $OUT/dist, a table is printed last.
#   bash scripts/dist/gpu_scaling.sh [build] [nccl] [synthetic] [jpeg] [peer]   (default: all)
# Stages:
#   build      cmake + ninja (Release, sm_90) of mo_train and the dist tests in $B
#   nccl       mpirun -np 2 tests/mpi_test_nccl: NCCL group, DataParallel on GPU vs CPU, all-reduce GB/s
#   synthetic  the trainer's step (MambaOut + DataParallel + AdamW, bf16) on random inputs:
#              tests/mpi_test_scaling under mpirun -np 1 and -np 2 (MO_DIST_BENCH=1)
#   jpeg       mpirun -np 1 / -np 2 mo_train on a generated JPEG ImageFolder (full recipe transform,
#              global batch 4096 = ranks × 256 × accumulation), img/s read from its per-step log lines
#   peer       torchrun --nproc_per_node 1 / 2 scripts/dist/ddp_peer.py (timm mambaout_tiny, bf16, DDP)
# Environment: MODEL (mambaout_tiny), BATCH (256 per GPU), ACCUM (1: micro-batches per optimizer step in
#   the synthetic and peer runs; the official recipe is BATCH=128 ACCUM=4), STEPS (30 timed steps after 5 warm-up),
#   OUT (/tmp/mo_out), B (build-gpu), JPEG_DIR (generated when absent: $OUT/dist/jpeg),
#   JPEG_STEPS (6 optimizer steps of 4096 images).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/mo_out}
LOG=$OUT/dist
mkdir -p "$LOG"
# NVLink multicast (NVLS) stays off on these machines, for NCCL, PyTorch and NVSHMEM alike.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
MODEL=${MODEL:-mambaout_tiny}
BATCH=${BATCH:-256}
ACCUM=${ACCUM:-1}
STEPS=${STEPS:-30}
B=${B:-build-gpu}
JPEG_DIR=${JPEG_DIR:-$LOG/jpeg}
JPEG_STEPS=${JPEG_STEPS:-6}
stages=${*:-build nccl synthetic jpeg peer}
has() { [[ " $stages " == *" $1 "* ]]; }
# --bind-to none: Open MPI would pin each rank to one core, starving the loader's worker threads.
MPIRUN="mpirun --allow-run-as-root --oversubscribe --bind-to none"
RESULTS=$LOG/results_b${BATCH}_a${ACCUM}.jsonl
: >"$RESULTS"

nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader | tee "$LOG/machine.txt"
nvidia-smi topo -m >>"$LOG/machine.txt" 2>&1
ngpu=$(nvidia-smi -L | wc -l)
if [ "$ngpu" -lt 2 ]; then echo "gpu_scaling: needs 2 GPUs, found $ngpu"; exit 1; fi

if has build || [ ! -x $B/tools/mo_train ] || [ ! -x $B/tests/mpi_test_scaling ]; then
  t0=$(date +%s)
  cmake -S . -B $B -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 >"$LOG/build.log" 2>&1 &&
    ninja -C $B -j"$(nproc)" mo_train mpi_test_scaling mpi_test_nccl mpi_test_data_parallel mpi_test_faults \
      >>"$LOG/build.log" 2>&1
  rc=$?
  echo "build rc=$rc in $(( $(date +%s) - t0 )) s; $(grep -m1 'NCCL backend' "$LOG/build.log")"
  if [ $rc != 0 ]; then grep -E "error|FAILED" "$LOG/build.log" | head -40; exit 1; fi
fi

if has nccl; then
  timeout 300 $MPIRUN -np 2 $B/tests/mpi_test_nccl >"$LOG/nccl.log" 2>&1
  echo "mpi_test_nccl rc=$?"
  grep -E "PASSED|FAILED|SKIPPED|rank\(s\) failed|\[ cuda|\[ nccl" "$LOG/nccl.log" | sort -u
fi

if has synthetic; then
  for np in 1 2; do
    MO_DIST_BENCH=1 MO_DIST_BENCH_MODEL=$MODEL MO_DIST_BENCH_BATCH=$BATCH MO_DIST_BENCH_ACCUM=$ACCUM MO_DIST_BENCH_STEPS=$STEPS \
      timeout 600 $MPIRUN -np $np $B/tests/mpi_test_scaling >"$LOG/synthetic_b${BATCH}_a${ACCUM}_np$np.log" 2>&1
    echo "synthetic np=$np rc=$?"
    grep -h '^{"tool"' "$LOG/synthetic_b${BATCH}_a${ACCUM}_np$np.log" | tee -a "$RESULTS"
  done
fi

if has jpeg; then
  if [ ! -d "$JPEG_DIR/train" ]; then
    # 200 distinct 500x375 JPEGs (scripts/data/make_bench_images.py), hard-linked into 10 classes x 2560
    # files so that every rank reads real JPEGs through the full recipe transform.
    python3 scripts/data/make_bench_images.py "$JPEG_DIR/src" 200 >"$LOG/jpeg_make.log" 2>&1
    python3 - "$JPEG_DIR" <<'EOF'
import os, sys
root = sys.argv[1]
src = sorted(os.path.join(root, "src", f) for f in os.listdir(os.path.join(root, "src")))
for split, per_class in (("train", 2560), ("val", 20)):
    for c in range(10):
        d = os.path.join(root, split, "c%02d" % c)
        os.makedirs(d, exist_ok=True)
        for i in range(per_class):
            dst = os.path.join(d, "%05d.jpg" % i)
            if not os.path.exists(dst):
                os.link(src[(c * 7919 + i) % len(src)], dst)
EOF
  fi
  cores=$(nproc)
  for np in 1 2; do
    workers=$(( cores / np ))
    rm -rf "$LOG/jpeg_run_np$np"  # a fresh run each time (mo_train will not start over a run's checkpoints)
    timeout 600 $MPIRUN -np $np $B/tools/mo_train recipes/tiny.yaml --set data.root="$JPEG_DIR" \
      --set model.name=$MODEL --set model.num_classes=10 --set train.batch_size=$BATCH \
      --set train.global_batch=4096 --set train.max_steps=$JPEG_STEPS --set train.eval_every=0 \
      --set data.workers=$workers --set log.progress=lines --set log.every_steps=1 --set log.tensorboard=false \
      --set train.output="$LOG/jpeg_run_np$np" >"$LOG/jpeg_np$np.log" 2>&1
    echo "jpeg np=$np rc=$?"
    # img/s of each step after the first two (warm-up), median
    python3 - "$LOG/jpeg_np$np.log" $np "$MODEL" $BATCH >>"$RESULTS" <<'EOF'
import json, re, statistics, sys
path, world, model, batch = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
steps = [float(x) for x in re.findall(r"step \d+/\d+ \(\d+\).*? ([0-9.]+) img/s", open(path).read())]
row = {"tool": "mo", "what": "ddp_jpeg", "model": model, "world": world, "batch": batch,
       "images_per_s": round(statistics.median(steps[2:]), 1) if len(steps) > 2 else None, "steps_seen": len(steps)}
print(json.dumps(row))
EOF
    tail -1 "$RESULTS"
  done
fi

if has peer; then
  for np in 1 2; do
    timeout 600 torchrun --standalone --nproc_per_node=$np scripts/dist/ddp_peer.py --model $MODEL \
      --batch $BATCH --accum $ACCUM --steps $STEPS >"$LOG/peer_b${BATCH}_a${ACCUM}_np$np.log" 2>&1
    echo "torch ddp np=$np rc=$?"
    grep -h '^{"tool"' "$LOG/peer_b${BATCH}_a${ACCUM}_np$np.log" | tee -a "$RESULTS"
  done
fi

python3 - "$RESULTS" "$BATCH" "$ACCUM" <<'EOF' | tee "$LOG/table_b${BATCH}_a${ACCUM}.md"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
batch, accum = sys.argv[2], sys.argv[3]
print("| run | 1 GPU img/s | 2 GPUs img/s | scaling efficiency |")
print("|---|---|---|---|")
for tool, what in (("mo", "ddp_synthetic"), ("mo", "ddp_jpeg"), ("torch-ddp", "ddp_synthetic")):
    by = {r["world"]: r.get("images_per_s") for r in rows if r["tool"] == tool and r["what"] == what}
    one, two = by.get(1), by.get(2)
    eff = "%.1f%%" % (100 * two / (2 * one)) if one and two else "-"
    if one is None and two is None: continue
    shape = "batch %s x %s accumulation" % (batch, accum) if what != "ddp_jpeg" else "batch %s, global 4096" % batch
    print("| %s %s (%s) | %s | %s | %s |" % (tool, what, shape, one or "-", two or "-", eff))
EOF
