"""scaling_report.py: the parsing and the tables of scripts/dist/gpu_scaling.sh (standard library, plus numpy
for `fault`). Every subcommand but `table` prints JSON lines, which the script appends to its results file.

  rows LOG [k=v ...]             the '{"tool": ...}' lines of LOG (mpi_test_scaling, ddp_peer.py; a torchrun
                                 prefix is dropped) and the all-reduce bandwidths of mpi_test_nccl, each with
                                 the k=v fields added and, where LOG holds NCCL INFO lines, "links": how many
                                 connections used each transport (P2P, SHM, NET/...)
  jpeg LOG WORLD BATCH [k=v ...] mo_train's rank-0 log: img/s (median of the per-step values after the first two)
                                 and the epoch's `input:` line (step time against the wait for batches)
  fault REF RUN FAULT_LOG RANK EXIT_S RC [k=v ...]
                                 the kill of rank RANK: whether the job ended non-zero with the rank named, and
                                 whether the resumed run RUN ends where the uninterrupted REF does (the last
                                 checkpoint of each compared tensor by tensor, bit for bit, and the per-step losses)
  table RESULTS                  the markdown tables, last in the script's output
"""
import glob
import json
import os
import re
import statistics
import sys


def fields(args):
    out = {}
    for a in args:
        k, _, v = a.partition("=")
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out


def links(text):
    """Counts NCCL's 'Channel 00/0 : 3[3] -> 4[4] via P2P/CUMEM' lines by transport (the sending side's:
    NET prints a [send] and a [receive] line per connection)."""
    n = {}
    pat = r"Channel \d+(?:/\d+)? : \d+\[[0-9a-fx]+\] -> \d+\[[0-9a-fx]+\](?: \[(\w+)\])? via (\S+)"
    for m in re.finditer(pat, text):
        if m.group(1) == "receive":
            continue
        parts = m.group(2).split("/")
        kind = "/".join(parts[:2]) if parts[0] == "NET" else parts[0]
        n[kind] = n.get(kind, 0) + 1
    return n


def cmd_rows(log, *extra):
    text = open(log, errors="replace").read()
    seen = links(text)
    found = [json.loads(m.group(0)) for m in re.finditer(r'\{"tool": .*\}', text)]
    bw = r"\[ nccl all_reduce (\d+) MiB \] ([0-9.]+) ms, algbw ([0-9.]+) GB/s, busbw ([0-9.]+) GB/s"
    for m in re.finditer(bw, text):
        found.append({"tool": "mo", "what": "allreduce", "mib": int(m.group(1)), "ms": float(m.group(2)),
                      "algbw_gbs": float(m.group(3)), "busbw_gbs": float(m.group(4))})
    for row in found:
        row.update(fields(extra))
        if seen:
            row["links"] = seen
        print(json.dumps(row))


INPUT = re.compile(r"input: the step waited ([0-9.]+) s of ([0-9.]+) s for batches \(([0-9.]+)%(?:, slowest rank "
                   r"([0-9.]+) s)?\), upload ([0-9.]+) s; workers ([0-9.]+) s busy, ([0-9.]+) images/s each thread")


def cmd_jpeg(log, world, batch, *extra):
    text = open(log, errors="replace").read()
    steps = [float(x) for x in re.findall(r"step \d+/\d+ \(\d+\).*? ([0-9.]+) img/s", text)]
    row = {"tool": "mo", "what": "ddp_jpeg", "world": int(world), "batch": int(batch)}
    row.update(fields(extra))
    row["images_per_s"] = round(statistics.median(steps[2:]), 1) if len(steps) > 2 else None
    row["steps_seen"] = len(steps)
    m = INPUT.search(text)
    if m and steps:
        wait, train, pct, slow, upload, busy, per_thread = m.groups()
        n = len(steps)
        row.update({"train_s": float(train), "step_ms": round(1e3 * float(train) / n, 1),
                    "wait_ms_per_step": round(1e3 * float(wait) / n, 1),
                    "slowest_rank_wait_ms_per_step": round(1e3 * float(slow if slow else wait) / n, 1),
                    "wait_pct": float(pct), "upload_s": float(upload), "workers_busy_s": float(busy),
                    "images_per_thread_s": float(per_thread)})
    acc = re.search(r"batch \d+ x (\d+) accumulation", text)
    if acc:
        row["accum"] = int(acc.group(1))
    print(json.dumps(row))


def last_checkpoint(run):
    files = glob.glob(os.path.join(run, "checkpoints", "ckpt-*-s*.mo"))
    return max(files, key=lambda f: int(re.search(r"-s(\d+)\.mo$", f).group(1))) if files else None


def step_losses(run):
    """{step: loss text} from the run's log.txt; a resumed run appends, and its value of a step wins."""
    out = {}
    path = os.path.join(run, "log.txt")
    if os.path.exists(path):
        for m in re.finditer(r"step \d+/\d+ \((\d+)\)\s+loss (\S+)", open(path, errors="replace").read()):
            out[int(m.group(1))] = m.group(2)
    return out


def compare(ref, run):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
    import mo_checkpoint
    a_path, b_path = last_checkpoint(ref), last_checkpoint(run)
    if not a_path or not b_path:
        return {"identical": False, "why": "no checkpoint in %s" % (ref if not a_path else run)}
    a = mo_checkpoint.load(a_path, optimizer=True, backend="numpy")
    b = mo_checkpoint.load(b_path, optimizer=True, backend="numpy")
    diff = []
    for part in ("tensors", "optimizer", "ema"):
        ta, tb = getattr(a, part), getattr(b, part)
        if ta.keys() != tb.keys():
            diff.append("%s: other tensor names" % part)
            continue
        for k in ta:
            if ta[k].dtype != tb[k].dtype or ta[k].shape != tb[k].shape or ta[k].tobytes() != tb[k].tobytes():
                diff.append("%s %s" % (part, k))
    for k in a.metadata:
        if k not in ("config_yaml", "wall_time") and a.metadata[k] != b.metadata.get(k):
            diff.append("metadata %s: %r vs %r" % (k, a.metadata[k], b.metadata.get(k)))
    la, lb = step_losses(ref), step_losses(run)
    loss_diff = [s for s in la if s in lb and la[s] != lb[s]]
    return {"identical": not diff and not loss_diff and a.metadata["step"] == b.metadata["step"],
            "checkpoint": os.path.basename(b_path), "step": b.metadata["step"],
            "tensors_compared": len(a.tensors) + len(a.optimizer) + len(a.ema), "differences": diff[:10],
            "losses_compared": len([s for s in la if s in lb]), "loss_differences": loss_diff[:10]}


def cmd_fault(ref, run, fault_log, rank, exit_s, rc, *extra):
    text = open(fault_log, errors="replace").read()
    named = re.search(r"\brank %s\b" % re.escape(rank), text)
    row = {"tool": "mo", "what": "fault", "killed_rank": int(rank), "exit_s": float(exit_s), "rc": int(rc),
           "rank_named": bool(named), "message": named and text[max(0, named.start() - 80):named.end() + 80].strip()}
    row.update(fields(extra))
    row["resume"] = compare(ref, run)
    print(json.dumps(row))


def cell(v):
    return "-" if v is None else ("%.0f" % v if v >= 100 else "%.1f" % v)


def cmd_table(results):
    rows = [json.loads(l) for l in open(results) if l.strip().startswith("{")]
    tp = [r for r in rows if r.get("what") in ("ddp_synthetic", "ddp_jpeg") and not r.get("transport")]
    worlds = sorted({r["world"] for r in tp})
    by = {}
    for r in tp:
        by[(r["tool"], r["what"], r["batch"], r["world"])] = r.get("images_per_s")
    keys = sorted({k[:3] for k in by}, key=lambda k: (k[1] != "ddp_synthetic", -k[2], k[0] != "mo"))
    if keys:
        print("## Throughput (img/s; in brackets: img/s at N / (N x img/s at 1))\n")
        print("| run | batch per GPU | " + " | ".join("%d GPU%s" % (w, "s" if w > 1 else "") for w in worlds) + " |")
        print("|---|---|" + "---|" * len(worlds))
        for tool, what, batch in keys:
            one = by.get((tool, what, batch, 1))
            cells = []
            for w in worlds:
                v = by.get((tool, what, batch, w))
                eff = " (%.1f%%)" % (100 * v / (w * one)) if v and one and w > 1 else ""
                cells.append(cell(v) + eff)
            print("| %s %s | %d | %s |" % (tool, what.replace("ddp_", ""), batch, " | ".join(cells)))
        for what, batch in sorted({(k[1], k[2]) for k in keys}, key=lambda k: (k[0] != "ddp_synthetic", -k[1])):
            if not any(k == ("torch-ddp", what, batch) for k in keys):
                continue
            ratio = []
            for w in worlds:
                m, t = by.get(("mo", what, batch, w)), by.get(("torch-ddp", what, batch, w))
                ratio.append("%.2fx" % (m / t) if m and t else "-")
            print("| mo / DDP %s | %d | %s |" % (what.replace("ddp_", ""), batch, " | ".join(ratio)))
    jp = [r for r in rows if r.get("what") == "ddp_jpeg" and "step_ms" in r]
    if jp:
        print("\n## JPEG folder: does the loader keep up? (per optimizer step, mean over the ranks)\n")
        print("| GPUs | batch x accumulation | workers per rank | step ms | wait for batches ms (slowest rank) "
              "| wait % |")
        print("|---|---|---|---|---|---|")
        for r in sorted(jp, key=lambda r: (-r["batch"], r["world"])):
            print("| %d | %d x %s | %s | %.0f | %.1f (%.1f) | %.1f%% |" % (
                r["world"], r["batch"], r.get("accum", "?"), r.get("workers", "?"), r["step_ms"],
                r["wait_ms_per_step"], r["slowest_rank_wait_ms_per_step"], r["wait_pct"]))
    bk = [r for r in rows if r.get("transport") and r.get("what") == "ddp_synthetic"]
    if bk:
        print("\n## Gradient bucket size (ddp.bucket_mb) by transport, %d ranks, synthetic\n" % bk[0]["world"])
        print("| transport | bucket MiB | buckets | img/s | step ms | NCCL connections |")
        print("|---|---|---|---|---|---|")
        best = {}
        for r in bk:
            if r.get("images_per_s") and r["images_per_s"] > best.get(r["transport"], 0):
                best[r["transport"]] = r["images_per_s"]
        for r in bk:
            win = r.get("images_per_s") == best.get(r["transport"])
            v = cell(r.get("images_per_s"))
            print("| %s | %s | %s | %s | %s | %s |" % (
                r["transport"], r.get("bucket_mb"), r.get("buckets"), "**%s**" % v if win else v, r.get("step_ms"),
                ", ".join("%s %d" % kv for kv in sorted(r.get("links", {}).items())) or "-"))
    ar = [r for r in rows if r.get("what") == "allreduce"]
    if ar:
        print("\n## NCCL all-reduce (fp32, average) by transport\n")
        print("| transport | ranks | MiB | ms | bus bandwidth GB/s |")
        print("|---|---|---|---|---|")
        for r in ar:
            print("| %s | %s | %d | %.2f | %.1f |" % (r.get("transport", "-"), r.get("world", "?"), r["mib"], r["ms"],
                                                 r["busbw_gbs"]))
    for r in rows:
        if r.get("what") == "fault":
            res = r["resume"]
            print("\n## Fault at %s ranks: rank %d killed with SIGKILL mid-step\n" % (r.get("world", "?"),
                                                                              r["killed_rank"]))
            print("- job ended after %.1f s (docs/multinode.md, 'When a rank fails': ~1 s for a killed rank), exit "
                  "status %d, rank %d named: %s" % (
                r["exit_s"], r["rc"], r["killed_rank"], "yes" if r["rank_named"] else "NO"))
            why = res.get("differences", []) + ["loss of step %s" % s for s in res.get("loss_differences", [])]
            why += [res["why"]] if res.get("why") else []
            print("- resumed on the same ranks: %s (%s, %s tensors and %s step losses compared)%s" % (
                "bit-identical" if res.get("identical") else "NOT identical", res.get("checkpoint", "-"),
                res.get("tensors_compared", 0), res.get("losses_compared", 0),
                "" if res.get("identical") else ": " + "; ".join(why)))
    for r in rows:
        if r.get("what") == "skipped":
            print("\n- skipped: %s (%s)" % (r.get("run"), r.get("why")))


if __name__ == "__main__":
    cmds = {"rows": cmd_rows, "jpeg": cmd_jpeg, "fault": cmd_fault, "table": cmd_table}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        sys.exit(__doc__)
    cmds[sys.argv[1]](*sys.argv[2:])
