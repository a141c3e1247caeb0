"""table.py: turns mo_bench / peer_torch JSON lines into a markdown table with ratios against the
peers measured in the same run.  python3 table.py bench.jsonl"""
import json
import sys

rows = []
for line in open(sys.argv[1]):
    line = line.strip()
    if line.startswith("{"):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass
keys = []
for r in rows:
    if "model" in r:
        k = (r["model"], r["mode"], r["batch"], r["dtype"], r["device"])
        if k not in keys:
            keys.append(k)
print("| model | mode | batch | dtype | mo img/s | mo peak GiB | peer | peer img/s | peer peak GiB | mo / peer |")
print("|---|---|---|---|---|---|---|---|---|---|")
for k in keys:
    ours = [r for r in rows if r.get("tool") == "mo" and (r["model"], r["mode"], r["batch"], r["dtype"], r["device"]) == k]
    peers = [r for r in rows if r.get("tool") != "mo" and "model" in r and (r["model"], r["mode"], r["batch"], r["dtype"], r["device"]) == k]
    o = ours[0] if ours else None
    for p in peers or [None]:
        ratio = f"{o['images_per_s'] / p['images_per_s']:.2f}x" if o and p else "-"
        print(f"| {k[0]} | {k[1]} | {k[2]} | {k[3]} | {o['images_per_s'] if o else '-'} | {o['peak_gib'] if o else '-'} | "
              f"{p['tool'] if p else '-'} | {p['images_per_s'] if p else '-'} | {p['peak_gib'] if p else '-'} | {ratio} |")
for r in rows:
    if "error" in r:
        print(f"\nerror: {r}")
