"""ddp_peer.py: the PyTorch DDP peer of the two-GPU scaling target (targets.md): timm's mambaout_*
with bf16 autocast, fused AdamW, soft-target cross-entropy with label smoothing 0.1, synthetic
inputs (different on every rank), batch 256 per GPU, DistributedDataParallel (25 MiB buckets, the
gradients as bucket views), one optimizer step per micro-batch unless --accum > 1 (then no_sync on
all but the last micro-batch, as timm's train.py does).

  torchrun --standalone --nproc_per_node=1 scripts/dist/ddp_peer.py --model mambaout_tiny --batch 256
  torchrun --standalone --nproc_per_node=2 scripts/dist/ddp_peer.py --model mambaout_tiny --batch 256

Rank 0 prints one JSON line, like tests/dist/mpi_test_scaling (MO_DIST_BENCH=1):
  {"tool": "torch-ddp", "world": 2, "images_per_s": ..., ...}
Keep NVLink multicast off: export NCCL_NVLS_ENABLE=0 (scripts/dist/gpu_scaling.sh does).
"""
import argparse
import contextlib
import json
import os
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

p = argparse.ArgumentParser()
p.add_argument("--model", default="mambaout_tiny")
p.add_argument("--batch", type=int, default=256, help="per GPU")
p.add_argument("--accum", type=int, default=1)
p.add_argument("--img", type=int, default=224)
p.add_argument("--warmup", type=int, default=5)
p.add_argument("--steps", type=int, default=15)
p.add_argument("--channels-last", action="store_true")
a = p.parse_args()

import timm  # noqa: E402  (after argparse so that --help works without timm)

local_rank = int(os.environ.get("LOCAL_RANK", 0))
torch.cuda.set_device(local_rank)
dist.init_process_group("nccl", device_id=torch.device("cuda", local_rank))
rank, world = dist.get_rank(), dist.get_world_size()
dev = torch.device("cuda", local_rank)

torch.manual_seed(0)  # the same initial weights everywhere (DDP broadcasts rank 0's anyway)
model = timm.create_model(a.model, num_classes=1000).to(dev)
if a.channels_last:
    model = model.to(memory_format=torch.channels_last)
ddp = DDP(model, device_ids=[local_rank], bucket_cap_mb=25, gradient_as_bucket_view=True)
opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

g = torch.Generator(device=dev).manual_seed(1234 + rank)
x = torch.rand(a.batch, 3, a.img, a.img, device=dev, generator=g) * 4 - 2
if a.channels_last:
    x = x.contiguous(memory_format=torch.channels_last)
labels = torch.randint(0, 1000, (a.batch,), device=dev, generator=g)
target = torch.full((a.batch, 1000), 0.1 / 1000, device=dev)
target.scatter_(1, labels[:, None], 1 - 0.1 + 0.1 / 1000)


def step():
    for m in range(a.accum):
        last = m == a.accum - 1
        ctx = ddp.no_sync() if not last else contextlib.nullcontext()
        with ctx:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = ddp(x)
            loss = torch.sum(-target * F.log_softmax(out.float(), dim=-1), dim=-1).mean() / a.accum
            loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


for _ in range(a.warmup):
    step()
torch.cuda.synchronize()
dist.barrier()
torch.cuda.reset_peak_memory_stats(dev)
t0 = time.perf_counter()
for _ in range(a.steps):
    step()
torch.cuda.synchronize()
mine = torch.tensor([time.perf_counter() - t0], device=dev)
dist.all_reduce(mine, op=dist.ReduceOp.MAX)
slowest = mine.item()
if rank == 0:
    print(json.dumps({
        "tool": "torch-ddp", "what": "ddp_synthetic", "model": a.model, "world": world, "batch": a.batch,
        "accum": a.accum, "dtype": "bf16", "steps": a.steps,
        "images_per_s": round(world * a.batch * a.accum * a.steps / slowest, 1),
        "step_ms": round(1e3 * slowest / a.steps, 1),
        "peak_gib": round(torch.cuda.max_memory_allocated(dev) / 2**30, 2),
        "torch": torch.__version__, "timm": timm.__version__}), flush=True)
dist.destroy_process_group()
