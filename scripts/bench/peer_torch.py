"""peer_torch.py: the PyTorch peer for mo_bench on the same shapes: our reference MambaOut
(tests/reference/mambaout_ref.py, the official module layout) on the CPU, or timm's mambaout_* on the
GPU (eager or torch.compile, bf16 autocast, fused AdamW, channels_last optional).
  python3 peer_torch.py --model mambaout_femto --batch 16 --img 224 --device cpu --threads 2
  python3 peer_torch.py --model mambaout_tiny --batch 256 --device cuda --dtype bf16 [--compile]
Prints one JSON line per mode, like mo_bench --json.

With --barrier DIR --barrier-n N (scripts/gpu/run_all.sh peers-parallel), N such processes compile and warm
up at the same time, then take turns: each writes DIR/ID.ready when warm and sleeps until all N are ready
(or have failed or died), then takes an exclusive flock on DIR/lock, waits for the previous holder to have
exited (its GPU memory freed), re-warms, times its steps, prints and exits, releasing the lock; the others
sleep in flock meanwhile, so no other process uses the GPU during a timed run.
"""
import argparse
import fcntl
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "reference"))

p = argparse.ArgumentParser()
p.add_argument("--model", default="mambaout_femto")
p.add_argument("--batch", type=int, default=32)
p.add_argument("--img", type=int, default=224)
p.add_argument("--device", default="cpu")
p.add_argument("--dtype", default="fp32")
p.add_argument("--mode", default="both")
p.add_argument("--warmup", type=int, default=3)
p.add_argument("--iters", type=int, default=10)
p.add_argument("--threads", type=int, default=0)
p.add_argument("--compile", action="store_true")
p.add_argument("--channels-last", action="store_true")
p.add_argument("--barrier", metavar="DIR", help="compile beside others, then time in turn (see above)")
p.add_argument("--barrier-n", type=int, default=0, help="how many processes share --barrier DIR")
p.add_argument("--barrier-timeout", type=float, default=1800, help="seconds to wait for the others to be warm")
a = p.parse_args()
if a.barrier and a.barrier_n < 1:
    p.error("--barrier needs --barrier-n N (the number of processes sharing it)")
ME = f"{a.model}-{a.mode}-b{a.batch}-{a.dtype}{'-compile' if a.compile else ''}-{os.getpid()}"
if a.barrier:  # announced before the slow imports, so the others can tell a dead process from a slow one
    if not os.path.isdir(a.barrier):
        p.error(f"--barrier {a.barrier}: no such folder")
    with open(os.path.join(a.barrier, ME + ".pid"), "w") as f:
        f.write(str(os.getpid()))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

if a.threads:
    torch.set_num_threads(a.threads)
dev = torch.device(a.device)
if a.device == "cuda" and a.dtype == "fp32":  # true fp32 like mo's (cuDNN would use TF32 by default)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
if a.device == "cuda":
    import timm
    model = timm.create_model(a.model, num_classes=1000).to(dev)
    peer = "timm " + timm.__version__ + (" compile" if a.compile else " eager")
else:
    from mambaout_ref import MambaOut, VARIANTS
    depths, dims = VARIANTS[a.model]
    model = MambaOut(depths, dims)
    peer = "torch " + torch.__version__ + " eager"
if a.channels_last:
    model = model.to(memory_format=torch.channels_last)
fwd = torch.compile(model) if a.compile else model
fused = {"fused": True} if a.device == "cuda" else {}
opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05, **fused)
x = torch.rand(a.batch, 3, a.img, a.img, device=dev) * 4 - 2
if a.channels_last:
    x = x.contiguous(memory_format=torch.channels_last)
labels = torch.randint(0, 1000, (a.batch,), device=dev)
use_amp = a.dtype == "bf16"


def sync():
    if a.device == "cuda":
        torch.cuda.synchronize()


def report(mode, secs):
    peak = torch.cuda.max_memory_allocated() / 2**30 if a.device == "cuda" else 0.0
    print(json.dumps({"tool": peer, "model": a.model, "mode": mode, "device": a.device, "dtype": a.dtype,
                      "batch": a.batch, "img": a.img, "threads": torch.get_num_threads(),
                      "images_per_s": round(a.batch * a.iters / secs, 2), "peak_gib": round(peak, 3)}), flush=True)


def train_step():
    opt.zero_grad(set_to_none=True)
    with torch.autocast(a.device, dtype=torch.bfloat16, enabled=use_amp):
        loss = F.cross_entropy(fwd(x), labels, label_smoothing=0.1)
    loss.backward()
    opt.step()


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def wait_for_all(mark):
    """Writes DIR/ME.<mark>, then sleeps until every one of the N processes is ready, failed or gone."""
    open(os.path.join(a.barrier, ME + "." + mark), "w").close()
    t0 = time.monotonic()
    while True:
        names = os.listdir(a.barrier)
        pids = [n[:-4] for n in names if n.endswith(".pid")]
        done = [i for i in pids if i + ".ready" in names or i + ".failed" in names
                or not alive(int(open(os.path.join(a.barrier, i + ".pid")).read() or 0))]
        if len(pids) >= a.barrier_n and len(done) == len(pids):
            return
        if time.monotonic() - t0 > a.barrier_timeout:
            print(f"peer_torch {ME}: {len(done)} of {a.barrier_n} peers ready after {a.barrier_timeout:.0f} s; "
                  "timing anyway", file=sys.stderr)
            return
        time.sleep(0.5)  # files only: nothing touches the GPU while waiting


modes = ["train", "infer"] if a.mode == "both" else [a.mode]


def warm(mode):
    if mode == "train":
        model.train()
        for _ in range(a.warmup):
            train_step()
    else:
        model.eval()
        with torch.no_grad(), torch.autocast(a.device, dtype=torch.bfloat16, enabled=use_amp):
            for _ in range(a.warmup):
                fwd(x)
    sync()


def timed(mode):
    if a.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    if mode == "train":
        t0 = time.perf_counter()
        for _ in range(a.iters):
            train_step()
        sync()
    else:
        with torch.no_grad(), torch.autocast(a.device, dtype=torch.bfloat16, enabled=use_amp):
            t0 = time.perf_counter()
            for _ in range(a.iters):
                fwd(x)
            sync()
    report(mode, time.perf_counter() - t0)


if not a.barrier:
    for mode in modes:
        warm(mode)
        timed(mode)
    sys.exit(0)

try:  # compile and warm up beside the others
    for mode in modes:
        warm(mode)
except BaseException:
    wait_for_all("failed")  # the others need not wait for this one
    raise
if a.device == "cuda":
    torch.cuda.empty_cache()  # hold only weights and optimizer state while waiting
wait_for_all("ready")
lock = os.open(os.path.join(a.barrier, "lock"), os.O_WRONLY | os.O_CREAT, 0o644)
fcntl.flock(lock, fcntl.LOCK_EX)  # sleeps until the GPU is free
holder = os.path.join(a.barrier, "holder")
if os.path.exists(holder):  # the lock goes at the last holder's exit: wait until its teardown is over too
    last = int(open(holder).read() or 0)
    while last and alive(last):
        time.sleep(0.05)
with open(holder, "w") as f:
    f.write(str(os.getpid()))
for mode in modes:
    warm(mode)  # again: the clocks and the allocator's cache after the wait
    timed(mode)
# the lock is held until this process exits (its descriptor is never closed before)
