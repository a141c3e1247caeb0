"""adamw_ref.py: torch.optim.AdamW on parameters and per-step gradients from DIR (.npy), with timm's
two param groups (no weight decay for biases and ndim <= 1). Writes DIR/out/<name>.npy.
  python3 adamw_ref.py DIR   (DIR/config.txt: steps, lr, weight_decay; DIR/names.txt: one name per line)
"""
import os
import sys

import numpy as np
import torch

d = sys.argv[1]
cfg = dict(line.strip().split("=", 1) for line in open(os.path.join(d, "config.txt")))
names = [n.strip() for n in open(os.path.join(d, "names.txt")) if n.strip()]
params = {n: torch.nn.Parameter(torch.from_numpy(np.load(os.path.join(d, n + ".npy")))) for n in names}
decay = [p for n, p in params.items() if not (n.endswith(".bias") or p.ndim <= 1)]
no_decay = [p for n, p in params.items() if n.endswith(".bias") or p.ndim <= 1]
wd = float(cfg["weight_decay"])
opt = torch.optim.AdamW([{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": wd}],
                        lr=float(cfg["lr"]), betas=(0.9, 0.999), eps=1e-8)
for s in range(int(cfg["steps"])):
    for n, p in params.items():
        p.grad = torch.from_numpy(np.load(os.path.join(d, f"grad{s}", n + ".npy")))
    opt.step()
os.makedirs(os.path.join(d, "out"), exist_ok=True)
for n, p in params.items():
    np.save(os.path.join(d, "out", n + ".npy"), p.detach().numpy())
