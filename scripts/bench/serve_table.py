"""serve_table.py: turns scripts/bench/serve_bench.py's JSON lines (mo_serve and its peer, same call) into a
markdown table: requests/s and p50/p99 latency per concurrency side by side, the ratio of requests/s, and
how many images got the same top-1 from both servers.  python3 serve_table.py serve.jsonl [MO_LABEL PEER_LABEL]
"""
import json
import sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.startswith("{")]
mo_label, peer_label = (sys.argv[2], sys.argv[3]) if len(sys.argv) > 3 else ("mo", "peer")
by = {(r.get("server"), r["concurrency"]): r for r in rows if r.get("tool") == "serve_bench"}
conc = sorted({c for _, c in by})
peer_name = next((r.get("health", {}).get("peer") for r in rows if r.get("server") == peer_label), None) or peer_label
mo_h = next((r.get("health", {}) for r in rows if r.get("server") == mo_label), {})
print(f"mo_serve: {mo_h.get('model', '?')} on {mo_h.get('device', '?')}, {mo_h.get('precision', '?')}, "
      f"batches of up to {mo_h.get('max_batch', '?')} within {mo_h.get('batch_window_ms', '?')} ms; peer: {peer_name}")
print("| concurrency | mo req/s | mo p50 ms | mo p99 ms | peer req/s | peer p50 ms | peer p99 ms | mo / peer req/s | "
      "same top-1 | errors mo/peer |")
print("|---|---|---|---|---|---|---|---|---|---|")
for c in conc:
    m, p = by.get((mo_label, c), {}), by.get((peer_label, c), {})
    ratio = f"{m['requests_per_s'] / p['requests_per_s']:.2f}x" if m.get("requests_per_s") and p.get("requests_per_s") else "-"
    mt, pt = m.get("top1", {}), p.get("top1", {})
    same = f"{sum(mt[k] == pt.get(k) for k in mt)}/{len(mt)}" if mt and pt else "-"
    print(f"| {c} | {m.get('requests_per_s', '-')} | {m.get('p50_ms', '-')} | {m.get('p99_ms', '-')} | "
          f"{p.get('requests_per_s', '-')} | {p.get('p50_ms', '-')} | {p.get('p99_ms', '-')} | {ratio} | {same} | "
          f"{m.get('errors', '-')}/{p.get('errors', '-')} |")
for r in rows:
    if "error" in r:
        print(f"\nerror: {r}")
