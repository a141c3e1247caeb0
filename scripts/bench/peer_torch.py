"""peer_torch.py: the PyTorch peer for mo_bench on the same shapes: our reference MambaOut
(tests/reference/mambaout_ref.py, the official module layout) on the CPU, or timm's mambaout_* on the
GPU (eager or torch.compile, bf16 autocast, fused AdamW, channels_last optional).
  python3 peer_torch.py --model mambaout_femto --batch 16 --img 224 --device cpu --threads 2
  python3 peer_torch.py --model mambaout_tiny --batch 256 --device cuda --dtype bf16 [--compile]
Prints one JSON line per mode, like mo_bench --json.
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

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
a = p.parse_args()

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


if a.mode in ("train", "both"):
    model.train()
    for _ in range(a.warmup):
        train_step()
    sync()
    if a.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(a.iters):
        train_step()
    sync()
    report("train", time.perf_counter() - t0)

if a.mode in ("infer", "both"):
    model.eval()
    with torch.no_grad(), torch.autocast(a.device, dtype=torch.bfloat16, enabled=use_amp):
        for _ in range(a.warmup):
            fwd(x)
        sync()
        if a.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for _ in range(a.iters):
            fwd(x)
        sync()
        report("infer", time.perf_counter() - t0)
