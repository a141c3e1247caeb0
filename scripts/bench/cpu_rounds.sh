#!/usr/bin/env bash
# cpu_rounds.sh: mo against PyTorch on the CPU, side by side: ROUNDS alternating rounds (mo, then the
# PyTorch peer) of training and inference on the same shapes, the load (`uptime`) noted before each
# round, then the median images/s per tool and mode and the mo / PyTorch ratios. Raw JSON lines go to
# OUT (default: a file in $TMPDIR, named at the end).
#   scripts/bench/cpu_rounds.sh [--rounds 3] [--model mambaout_femto] [--batch 16] [--img 224] [--threads 2]
#                               [--iters 3] [--warmup 1] [--bench build/tools/mo_bench] [--out FILE]
# MO_CPU_ISA=avx2 in the environment times mo's AVX2 kernels on an AVX-512 machine.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
rounds=3 model=mambaout_femto batch=16 img=224 threads=2 iters=3 warmup=1
bench="$root/build/tools/mo_bench" out=""
while [[ $# -gt 0 ]]; do
  v="${2-}"
  case "$1" in
    --rounds) rounds="$v" ;; --model) model="$v" ;; --batch) batch="$v" ;; --img) img="$v" ;;
    --threads) threads="$v" ;; --iters) iters="$v" ;; --warmup) warmup="$v" ;; --bench) bench="$v" ;;
    --out) out="$v" ;;
    *) echo "cpu_rounds.sh: unknown option '$1' (see the header of $0)" >&2; exit 2 ;;
  esac
  [[ $# -ge 2 ]] || { echo "cpu_rounds.sh: option '$1' needs a value" >&2; exit 2; }
  shift 2
done
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || { echo "cpu_rounds.sh: --rounds '$rounds' is not a positive integer" >&2; exit 2; }
[[ -x "$bench" ]] || { echo "cpu_rounds.sh: no mo_bench at '$bench' (build it: ninja -C build mo_bench, or pass --bench)" >&2; exit 2; }
[[ -x /usr/bin/python3 ]] || { echo "cpu_rounds.sh: needs Debian's /usr/bin/python3 with python3-torch" >&2; exit 2; }
[[ -n "$out" ]] || out="$(mktemp "${TMPDIR:-/tmp}/cpu_rounds.XXXXXX.jsonl")"
: > "$out"
args=(--model "$model" --batch "$batch" --img "$img" --warmup "$warmup" --iters "$iters" --threads "$threads")
echo "# mo ($bench, MO_CPU_ISA=${MO_CPU_ISA:-auto}) vs PyTorch, ${args[*]}, $rounds rounds"
for r in $(seq 1 "$rounds"); do
  load="$(uptime | sed 's/.*load average: //')"
  echo "round $r: load average $load"
  echo "{\"round\": $r, \"load\": \"$load\"}" >> "$out"
  "$bench" "${args[@]}" --json | grep '^{' | sed "s/}\$/, \"round\": $r}/" | tee -a "$out"
  /usr/bin/python3 "$here/peer_torch.py" "${args[@]}" | grep '^{' | sed "s/}\$/, \"round\": $r}/" | tee -a "$out"
done
/usr/bin/python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
runs = [r for r in rows if "images_per_s" in r]
med = {}
for r in runs:
    med.setdefault((r["mode"], r["tool"]), []).append(r["images_per_s"])
print("\n| mode | tool | images/s per round | median |\n|---|---|---|---|")
for (mode, tool), v in sorted(med.items()):
    print(f"| {mode} | {tool} | {', '.join(f'{x:.2f}' for x in v)} | {statistics.median(v):.2f} |")
for mode in ("train", "infer"):
    m = med.get((mode, "mo"))
    peers = [t for (md, t) in med if md == mode and t != "mo"]
    for p in peers:
        if m:
            print(f"{mode}: mo / {p} = {statistics.median(m) / statistics.median(med[(mode, p)]):.2f}x (medians)")
print("loads:", "; ".join(r["load"] for r in rows if "load" in r))
PY
echo "raw JSON lines: $out"
