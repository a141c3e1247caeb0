#!/usr/bin/env python3
"""sdpa_peer.py: PyTorch's scaled_dot_product_attention at the shape mo_bench_kernels times its attention
kernel on (ViT-S/16 at 224: batch 256, 197 tokens, 6 heads of 64), called as timm's Attention calls it:
q, k, v are views of the packed qkv Linear output, qkv.reshape(B, N, 3, H, D).permute(2, 0, 3, 1, 4).
Forward: SDPA alone. Backward: the gradient of the packed qkv from dout (SDPA's backward plus the copy
that gathers dq, dk, dv into qkv's layout, which mo's kernel writes directly). CUDA events, warm-up, then
the mean of N runs; fresh uniform(-2, 2) data. Prints lines in mo_bench_kernels' format, and the backend.
  python3 scripts/bench/sdpa_peer.py [--batch 256] [--tokens 197] [--heads 6] [--dtype bf16|fp32]
"""
import argparse

import torch
import torch.nn.functional as F


def timed(f, warmup, iters):
    for _ in range(warmup):
        f()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        f()
    stop.record()
    torch.cuda.synchronize()
    return 1e3 * start.elapsed_time(stop) / iters  # microseconds


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--tokens", type=int, default=197)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=20)
    a = p.parse_args()
    dt = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    torch.backends.cuda.matmul.allow_tf32 = False
    B, L, H, D = a.batch, a.tokens, a.heads, 64
    es = torch.finfo(dt).bits // 8
    n = B * L * H * D
    print(f"sdpa_peer: {torch.cuda.get_device_name()}, torch {torch.__version__}, {a.dtype}, "
          f"{a.warmup} warm-up + mean of {a.iters} runs")
    for causal in (False, True):
        qkv = (torch.rand(B, L, 3 * H * D, device="cuda") * 4 - 2).to(dt).requires_grad_()
        dout = (torch.rand(B, H, L, D, device="cuda") * 4 - 2).to(dt)
        q, k, v = qkv.reshape(B, L, 3, H, D).permute(2, 0, 3, 1, 4).unbind(0)
        mm = 2.0 * B * H * L * L * D * (0.5 if causal else 1.0)
        tag = f"vit_s16 {'causal' if causal else 'full'} {B}x{L} h{H}"
        with torch.no_grad():
            us = timed(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal), a.warmup, a.iters)
        print(f"{'sdpa fwd ' + tag:<44} {us:9.1f} us {4 * n * es / 1e6:10.1f} MB {4 * n * es / (us * 1e3):8.0f} GB/s"
              f" {2 * mm / (us * 1e6):7.1f} TFLOP/s")
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        us = timed(lambda: torch.autograd.grad(out, qkv, dout, retain_graph=True), a.warmup, a.iters)
        print(f"{'sdpa bwd ' + tag:<44} {us:9.1f} us {8 * n * es / 1e6:10.1f} MB {8 * n * es / (us * 1e3):8.0f} GB/s"
              f" {5 * mm / (us * 1e6):7.1f} TFLOP/s")
    # which kernels SDPA ran for this shape (flash, memory-efficient, cuDNN or math), from the profiler
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        torch.autograd.grad(out, qkv, dout)
        torch.cuda.synchronize()
    names = sorted({e.key for e in prof.key_averages() if e.device_time_total > 0})
    print("sdpa kernels: " + "; ".join(x[:90] for x in names))

if __name__ == "__main__":
    main()
