#!/usr/bin/python3
"""bench_peer.py: the peer of tools/mo_bench_data -- PIL 9.4 + torchvision 0.14 on one thread.

Usage: /usr/bin/python3 scripts/data/bench_peer.py DIR [--seconds S]
Times four transforms over the *.jpg files of DIR (read from the file each time, as a Dataset does):
  decode   Image.open(...).convert("RGB")
  rrc      RandomResizedCrop(224, bicubic) + RandomHorizontalFlip + ToTensor + Normalize
  rrc_ra   the same + RandAugment(num_ops=2, magnitude=9)   (torchvision's; timm is not packaged)
  eval     Resize(224, bicubic) + CenterCrop(224) + ToTensor + Normalize
and prints images/s and images per CPU second (steadier on a busy machine) for each.
"""
import argparse
import glob
import os
import time

import torch
from PIL import Image
import torchvision.transforms as T

torch.set_num_threads(1)
ap = argparse.ArgumentParser()
ap.add_argument("dir")
ap.add_argument("--seconds", type=float, default=5.0)
args = ap.parse_args()
files = sorted(glob.glob(os.path.join(args.dir, "*.jpg")))
assert files, f"no .jpg files in {args.dir}"
norm = T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
bic = T.InterpolationMode.BICUBIC
modes = {
    "decode": None,
    "rrc": T.Compose([T.RandomResizedCrop(224, interpolation=bic), T.RandomHorizontalFlip(), T.ToTensor(), norm]),
    "rrc_ra": T.Compose([T.RandomResizedCrop(224, interpolation=bic), T.RandomHorizontalFlip(),
                         T.RandAugment(num_ops=2, magnitude=9), T.ToTensor(), norm]),
    "eval": T.Compose([T.Resize(224, interpolation=bic), T.CenterCrop(224), T.ToTensor(), norm]),
}
for name, tf in modes.items():
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < args.seconds:
        img = Image.open(files[n % len(files)]).convert("RGB")
        if tf is not None:
            tf(img)
        n += 1
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"peer {name:8s} {n / dt:8.1f} images/s  {n / cpu:8.1f} per CPU second (1 thread, {n} images)")
