"""serve_bench.py: load generator for an image-classification HTTP endpoint (mo_serve's POST /predict or
scripts/bench/serve_peer_timm.py), Python standard library only. For each concurrency C, C client threads
(spread over a few processes, so the client's GIL does not cap the rate) each keep one HTTP/1.1 connection,
send a few untimed warm-up requests, meet at a barrier, then share a fixed number of timed requests (the raw
JPEG bytes as the body, the images in turn). Prints one JSON line per concurrency: requests/s over the
timed span, p50/p99/mean/max latency in ms, errors, the server's GET /health preprocess when it has one, and
the top-1 index each image got (to check two servers run the same model).
  python3 serve_bench.py --url http://127.0.0.1:8080/predict --images DIR --concurrency 1,16,128 \
      --requests 2000 --label mo
"""
import argparse
import http.client
import json
import math
import multiprocessing as mp
import os
import resource
import sys
import threading
import time
import urllib.parse


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", required=True, help="the predict endpoint, e.g. http://127.0.0.1:8080/predict")
    p.add_argument("--images", required=True, nargs="+", help="JPEG files or folders of them")
    p.add_argument("--concurrency", default="1,16,128", help="comma-separated client counts")
    p.add_argument("--requests", type=int, default=1000, help="timed requests per concurrency")
    p.add_argument("--warmup", type=int, default=2, help="untimed requests per connection first")
    p.add_argument("--procs", type=int, default=6, help="client processes at most (threads are spread over them)")
    p.add_argument("--timeout", type=float, default=120, help="seconds one request may take")
    p.add_argument("--label", default="", help="names the server in the JSON lines")
    a = p.parse_args()
    u = urllib.parse.urlsplit(a.url)
    if u.scheme != "http" or not u.hostname:
        p.error(f"--url {a.url}: expected http://HOST:PORT/PATH")
    try:
        a.conc = [int(c) for c in a.concurrency.split(",")]
    except ValueError:
        p.error(f"--concurrency {a.concurrency}: expected comma-separated integers")
    if not a.conc or min(a.conc) < 1:
        p.error(f"--concurrency {a.concurrency}: each count must be at least 1")
    if a.requests < 1 or a.warmup < 0 or a.procs < 1 or a.timeout <= 0:
        p.error("--requests and --procs must be at least 1, --warmup at least 0, --timeout positive")
    a.host, a.port, a.path = u.hostname, u.port or 80, u.path or "/"
    return p, a


def load_images(p, paths):
    files = []
    for path in paths:
        if os.path.isdir(path):
            files += sorted(os.path.join(path, f) for f in os.listdir(path) if f.lower().endswith((".jpg", ".jpeg")))
        elif os.path.isfile(path):
            files.append(path)
        else:
            p.error(f"--images {path}: no such file or folder")
    if not files:
        p.error(f"--images {' '.join(paths)}: no .jpg/.jpeg files there")
    return [(os.path.basename(f), open(f, "rb").read()) for f in files]


def post(conn, a, body):
    """One request; returns (top-1 index or None, error text or None). Raises on connection failures."""
    conn.request("POST", a.path, body=body, headers={"Content-Type": "image/jpeg"})
    r = conn.getresponse()
    data = r.read()
    if r.status != 200:
        return None, f"HTTP {r.status}: {data[:200]!r}"
    try:
        return json.loads(data)["top5"][0]["index"], None
    except (ValueError, KeyError, IndexError, TypeError):
        return None, f"not a predict answer: {data[:200]!r}"


def client(a, images, n_threads, barrier, counter, results):
    """One client process: n_threads connections; puts (latencies, errors, first error, end, top1) on results."""
    lat, errs, first_err, ends, top1, cpu0 = [], [0], [None], [0.0], {}, []
    mu = threading.Lock()

    def note_error(msg):
        with mu:
            errs[0] += 1
            first_err[0] = first_err[0] or msg

    def thread():
        conn = http.client.HTTPConnection(a.host, a.port, timeout=a.timeout)
        mine = []
        try:
            for i in range(a.warmup):
                name, body = images[i % len(images)]
                idx, err = post(conn, a, body)
                if err:
                    note_error(err)
                elif name not in top1:
                    with mu:
                        top1[name] = idx
        except (OSError, http.client.HTTPException) as e:
            note_error(f"warm-up: {e!r}")
            conn.close()
        barrier.wait()
        with mu:
            if not cpu0:
                ru0 = resource.getrusage(resource.RUSAGE_SELF)
                cpu0.append(ru0.ru_utime + ru0.ru_stime)
        while True:
            with counter.get_lock():
                k = counter.value
                counter.value += 1
            if k >= a.requests:
                break
            name, body = images[k % len(images)]
            t0 = time.perf_counter()
            try:
                idx, err = post(conn, a, body)
            except (OSError, http.client.HTTPException) as e:
                idx, err = None, repr(e)
                conn.close()  # http.client reconnects on the next request
            t1 = time.perf_counter()
            if err:
                note_error(err)
            else:
                mine.append(t1 - t0)
                if name not in top1:
                    with mu:
                        top1[name] = idx
        conn.close()
        with mu:
            lat.extend(mine)
            ends[0] = max(ends[0], time.perf_counter())

    ts = [threading.Thread(target=thread) for _ in range(n_threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    ru = resource.getrusage(resource.RUSAGE_SELF)
    results.put((lat, errs[0], first_err[0], ends[0], top1, ru.ru_utime + ru.ru_stime - cpu0[0]))


def pct(sorted_xs, q):
    """The q-quantile (nearest rank) of a sorted list."""
    i = min(len(sorted_xs) - 1, max(0, math.ceil(q * len(sorted_xs)) - 1))
    return sorted_xs[i]


def health(a):
    try:
        conn = http.client.HTTPConnection(a.host, a.port, timeout=10)
        conn.request("GET", "/health")
        r = conn.getresponse()
        body = r.read()
        conn.close()
        return json.loads(body) if r.status == 200 else None
    except (OSError, http.client.HTTPException, ValueError):
        return None


def run(a, images, c):
    ctx = mp.get_context("fork")  # the images are shared by fork; no threads exist in this process yet
    procs = min(a.procs, c)
    per = [c // procs + (1 if i < c % procs else 0) for i in range(procs)]
    barrier, counter, results = ctx.Barrier(c + 1), ctx.Value("q", 0), ctx.Queue()
    ps = [ctx.Process(target=client, args=(a, images, n, barrier, counter, results)) for n in per]
    for p in ps:
        p.start()
    try:
        barrier.wait(timeout=a.timeout * (a.warmup + 1) + 60)
    except threading.BrokenBarrierError:
        for p in ps:
            p.kill()
        sys.exit(f"serve_bench: the {c} clients did not finish their warm-up requests against {a.url}")
    t0 = time.perf_counter()
    got = [results.get() for _ in ps]
    for p in ps:
        p.join()
    lat = sorted(x for g in got for x in g[0])
    errors = sum(g[1] for g in got)
    first_err = next((g[2] for g in got if g[2]), None)
    end = max(g[3] for g in got)
    top1 = {}
    for g in got:
        top1.update(g[4])
    # the clients' CPU seconds per second of the timed span: near client_procs means the
    # load generator, not the server, set the pace (raise --procs)
    cpu = sum(g[5] for g in got)
    row = {"tool": "serve_bench", "server": a.label, "url": a.url, "concurrency": c, "client_procs": procs,
           "requests": len(lat), "errors": errors, "images": len(images),
           "requests_per_s": round(len(lat) / (end - t0), 2) if lat else 0.0,
           "client_cpu_per_s": round(cpu / (end - t0), 2)}
    if lat:
        row.update({"p50_ms": round(pct(lat, 0.50) * 1e3, 3), "p99_ms": round(pct(lat, 0.99) * 1e3, 3),
                    "mean_ms": round(sum(lat) / len(lat) * 1e3, 3), "max_ms": round(lat[-1] * 1e3, 3)})
    if first_err:
        row["first_error"] = first_err
    row["top1"] = dict(sorted(top1.items()))
    return row


def main():
    p, a = parse_args()
    images = load_images(p, a.images)
    h = health(a)
    bad = 0
    for c in a.conc:
        row = run(a, images, c)
        if h:
            row["health"] = {k: h[k] for k in ("model", "device", "precision", "preprocess", "max_batch",
                                                "batch_window_ms", "peer") if k in h}
        print(json.dumps(row), flush=True)
        bad += row["errors"] > 0 or row["requests"] == 0
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
