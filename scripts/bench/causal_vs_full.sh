#!/usr/bin/env bash
# causal_vs_full.sh: the MambaOut paper's causal-vs-full experiment (its Fig. 3b) on Fashion-MNIST:
# vit_tiny_patch4_32 trained with recipes/vit_tiny_fashion_mnist.yaml in both attention modes
# (model.attention=full | causal) for SEEDS seeds each, then the final top-1 of every run, mean ± std
# (sample std, n − 1) per mode, the gap, and curves.svg (eval top-1 per epoch, mean over the seeds).
#   bash scripts/bench/causal_vs_full.sh                     # 2 modes × 3 seeds
#   SEEDS="1 2" EXTRA="--set sched.epochs=5" bash scripts/bench/causal_vs_full.sh
# Environment: BUILD (build), DATA (data_cache/fashion-mnist; prepared when missing), OUT (output/causal_vs_full;
# one run folder per mode and seed, rerunning continues unfinished runs), SEEDS ("1 2 3"), EXTRA (more
# mo_train --set overrides, applied to every run), PARALLEL (1: all runs at once, each into its run folder's
# train.log, e.g. on a GPU that one small run leaves mostly idle). docs/causal_vs_full.md has the results.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
DATA=${DATA:-data_cache/fashion-mnist}
OUT=${OUT:-output/causal_vs_full}
SEEDS=${SEEDS:-1 2 3}
BIN=$BUILD/tools
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
for t in mo_train mo_prepare; do
  [ -x "$BIN/$t" ] || { echo "causal_vs_full.sh: $BIN/$t is not built (cmake --build $BUILD --target $t)" >&2; exit 1; }
done
[ -d "$DATA/train" ] || "$BIN/mo_prepare" fashion-mnist --out "$DATA" --size 32

pids=()
for mode in full causal; do
  for seed in $SEEDS; do
    run="$OUT/$mode-seed$seed"
    echo "== $mode attention, seed $seed -> $run"
    cmd=("$BIN/mo_train" recipes/vit_tiny_fashion_mnist.yaml --set "model.attention=$mode" --set "train.seed=$seed"
         --set "data.root=$DATA" --set "train.output=$run" --set train.resume=auto)
    # shellcheck disable=SC2206  # EXTRA is a list of words
    cmd+=(${EXTRA:-})
    if [ "${PARALLEL:-0}" = 1 ]; then
      mkdir -p "$run"
      "${cmd[@]}" >"$run/train.log" 2>&1 &
      pids+=($!)
    else
      "${cmd[@]}"
    fi
  done
done
for p in "${pids[@]}"; do
  wait "$p" || { echo "causal_vs_full.sh: a run failed (its train.log under $OUT):" >&2; tail -3 "$OUT"/*/train.log >&2; exit 1; }
done

/usr/bin/env python3 - "$OUT" $SEEDS <<'PY'
import csv, math, os, sys
out, seeds = sys.argv[1], sys.argv[2:]
curves, final = {}, {}
for mode in ("full", "causal"):
    for s in seeds:
        path = os.path.join(out, f"{mode}-seed{s}", "summary.csv")
        rows = list(csv.DictReader(open(path)))
        if not rows or "eval_top1" not in rows[0]:
            sys.exit(f"causal_vs_full.sh: {path} has no eval_top1 rows")
        top1 = [float(r["eval_top1"]) for r in rows]
        curves.setdefault(mode, []).append(top1)
        final.setdefault(mode, []).append(top1[-1])
def mean_std(v):
    m = sum(v) / len(v)
    return m, (math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0)
print(f"\n{'mode':<8} {'runs':>4}  {'final top-1 (%)':<22} per seed")
for mode in ("full", "causal"):
    m, s = mean_std(final[mode])
    print(f"{mode:<8} {len(final[mode]):>4}  {m:6.2f} ± {s:4.2f}{'':<9} " + "  ".join(f"{x:.2f}" for x in final[mode]))
gap = mean_std(final["full"])[0] - mean_std(final["causal"])[0]
print(f"gap (full − causal): {gap:+.2f} points   (the paper, ImageNet: ViT-Ti 72.2 vs 70.6, +1.6; ViT-S 79.8 vs 78.9, +0.9)")
# curves.svg: mean eval top-1 per epoch of each mode, the seeds' range shaded
W, H, L, B = 640, 400, 60, 50
n = min(len(c) for cs in curves.values() for c in cs)
lo = min(min(c[:n]) for cs in curves.values() for c in cs)
hi = max(max(c[:n]) for cs in curves.values() for c in cs)
lo, hi = math.floor(lo), math.ceil(hi) if hi > lo else lo + 1
x = lambda e: L + (W - L - 20) * (e / max(1, n - 1))
y = lambda v: H - B - (H - B - 20) * (v - lo) / (hi - lo)
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<line x1="{L}" y1="{H-B}" x2="{W-20}" y2="{H-B}" stroke="black"/><line x1="{L}" y1="20" x2="{L}" y2="{H-B}" stroke="black"/>',
       f'<text x="{W/2}" y="{H-12}" text-anchor="middle">epoch</text>',
       f'<text x="16" y="{H/2}" transform="rotate(-90 16 {H/2})" text-anchor="middle">eval top-1 (%)</text>']
for k in range(5):
    v = lo + (hi - lo) * k / 4
    svg.append(f'<text x="{L-6}" y="{y(v)+4:.1f}" text-anchor="end">{v:.1f}</text>')
for e in range(n):
    svg.append(f'<text x="{x(e):.1f}" y="{H-B+16}" text-anchor="middle">{e + 1}</text>')
for i, (mode, color) in enumerate((("full", "#1f77b4"), ("causal", "#d62728"))):
    cs = [c[:n] for c in curves[mode]]
    mean = [sum(c[e] for c in cs) / len(cs) for e in range(n)]
    band = [(x(e), y(max(c[e] for c in cs))) for e in range(n)] + [(x(e), y(min(c[e] for c in cs))) for e in reversed(range(n))]
    svg.append('<polygon fill="%s" fill-opacity="0.15" points="%s"/>' % (color, " ".join(f"{a:.1f},{b:.1f}" for a, b in band)))
    svg.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>' % (color, " ".join(f"{x(e):.1f},{y(v):.1f}" for e, v in enumerate(mean))))
    m, s = mean_std(final[mode])
    svg.append(f'<text x="{W-30}" y="{H-B-20-18*i}" text-anchor="end" fill="{color}">{mode}: {m:.2f} ± {s:.2f}</text>')
svg.append("</svg>")
with open(os.path.join(out, "curves.svg"), "w") as f:
    f.write("\n".join(svg) + "\n")
print(f"curves: {os.path.join(out, 'curves.svg')}")
PY
