"""ddp_peer.py: the PyTorch DDP peer of mo's data-parallel scaling (scripts/dist/gpu_scaling.sh): timm's
mambaout_* with bf16 autocast, fused AdamW, soft-target cross-entropy with label smoothing 0.1, synthetic
inputs (different on every rank), DistributedDataParallel (25 MiB buckets, the gradients as bucket
views); with accumulation > 1, no_sync on all but the last micro-batch, as timm's train.py does.

  torchrun --standalone --nproc_per_node=8 scripts/dist/ddp_peer.py --model mambaout_tiny --shapes 256x2,128x4

--shapes lists micro-batch per GPU x accumulation, one timed run each in the same process group (one
start-up for all); --warmup and --steps count optimizer steps. --device cpu runs our reference MambaOut
(tests/reference/mambaout_ref.py, fp32, gloo) on CPU ranks: a check of the plumbing with Debian's torch
1.13, which has no timm. Rank 0 prints one JSON line per shape, like tests/dist/mpi_test_scaling:
  {"tool": "torch-ddp", "what": "ddp_synthetic", "world": 8, "batch": 256, "accum": 2, "images_per_s": ...}
Keep NVLink multicast off: export NCCL_NVLS_ENABLE=0 (scripts/dist/gpu_scaling.sh does).
"""
import argparse
import contextlib
import json
import os
import sys
import time

p = argparse.ArgumentParser()
p.add_argument("--model", default="mambaout_tiny")
p.add_argument("--shapes", default="256x1", help="comma-separated BATCHxACCUM (batch per GPU)")
p.add_argument("--img", type=int, default=224)
p.add_argument("--warmup", type=int, default=5)
p.add_argument("--steps", type=int, default=15)
p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
p.add_argument("--channels-last", action="store_true")
a = p.parse_args()
shapes = []
for s in a.shapes.split(","):
    try:
        b, n = (int(v) for v in s.lower().split("x"))
    except ValueError:
        p.error("--shapes: '%s' is not BATCHxACCUM (e.g. 256x2)" % s)
    if b < 1 or n < 1:
        p.error("--shapes: '%s' needs a batch and an accumulation of at least 1" % s)
    shapes.append((b, n))

import torch  # noqa: E402  (after argparse so that --help works without torch)
import torch.distributed as dist  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.nn.parallel import DistributedDataParallel as DDP  # noqa: E402

local_rank = int(os.environ.get("LOCAL_RANK", 0))
on_gpu = a.device == "cuda"
if on_gpu:
    import timm
    torch.cuda.set_device(local_rank)
    dev = torch.device("cuda", local_rank)
    dist.init_process_group("nccl", device_id=dev)
    peer = {"torch": torch.__version__, "timm": timm.__version__}
else:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "reference"))
    from mambaout_ref import MambaOut, VARIANTS
    dev = torch.device("cpu")
    dist.init_process_group("gloo")
    peer = {"torch": torch.__version__, "model_code": "tests/reference/mambaout_ref.py"}
rank, world = dist.get_rank(), dist.get_world_size()

torch.manual_seed(0)  # the same initial weights everywhere (DDP broadcasts rank 0's anyway)
if on_gpu:
    model = timm.create_model(a.model, num_classes=1000).to(dev)
else:
    depths, dims = VARIANTS[a.model]
    model = MambaOut(depths, dims)
if a.channels_last:
    model = model.to(memory_format=torch.channels_last)
ddp = DDP(model, device_ids=[local_rank] if on_gpu else None, bucket_cap_mb=25, gradient_as_bucket_view=True)
opt = torch.optim.AdamW(model.parameters(), lr=1e-4, **({"fused": True} if on_gpu else {}))


def sync():
    if on_gpu:
        torch.cuda.synchronize()


def run(batch, accum):
    g = torch.Generator(device=dev).manual_seed(1234 + rank)
    x = torch.rand(batch, 3, a.img, a.img, device=dev, generator=g) * 4 - 2
    if a.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 1000, (batch,), device=dev, generator=g)
    target = torch.full((batch, 1000), 0.1 / 1000, device=dev)
    target.scatter_(1, labels[:, None], 1 - 0.1 + 0.1 / 1000)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if on_gpu else contextlib.nullcontext()

    def step():
        for m in range(accum):
            with ddp.no_sync() if m < accum - 1 else contextlib.nullcontext():
                with amp:
                    out = ddp(x)
                loss = torch.sum(-target * F.log_softmax(out.float(), dim=-1), dim=-1).mean() / accum
                loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(a.warmup):
        step()
    sync()
    dist.barrier()
    if on_gpu:
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    sync()
    mine = torch.tensor([time.perf_counter() - t0], device=dev)
    dist.all_reduce(mine, op=dist.ReduceOp.MAX)
    slowest = mine.item()
    if rank == 0:
        row = {"tool": "torch-ddp", "what": "ddp_synthetic", "model": a.model, "world": world, "batch": batch,
               "accum": accum, "img": a.img, "dtype": "bf16" if on_gpu else "float32", "steps": a.steps,
               "images_per_s": round(world * batch * accum * a.steps / slowest, 1),
               "step_ms": round(1e3 * slowest / a.steps, 1),
               "peak_gib": round(torch.cuda.max_memory_allocated(dev) / 2**30, 2) if on_gpu else 0.0}
        row.update(peer)
        print(json.dumps(row), flush=True)


for b, n in shapes:
    run(b, n)
dist.destroy_process_group()
