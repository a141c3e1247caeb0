#!/usr/bin/env python3
"""make_jpeg_folder.py: an ImageNet-like JPEG ImageFolder for throughput runs: 200 distinct 500x375 q90
photographs-like JPEGs (scripts/data/make_bench_images.py), hard-linked into CLASSES classes of PER_CLASS
training files (and 20 validation files each), so that every reader decodes real JPEGs through the full
recipe transform without the disk space of distinct files.
  python3 scripts/data/make_jpeg_folder.py ROOT [--classes 10] [--per-class 2560]
"""
import argparse
import os
import subprocess
import sys


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--per-class", type=int, default=2560)
    a = p.parse_args()
    if a.classes < 1 or a.per_class < 1:
        p.error("--classes and --per-class must be at least 1")
    src_dir = os.path.join(a.root, "src")
    if not os.path.isdir(src_dir) or len(os.listdir(src_dir)) < 200:
        here = os.path.dirname(os.path.abspath(__file__))
        subprocess.run([sys.executable, os.path.join(here, "make_bench_images.py"), src_dir, "200"], check=True,
                       stdout=subprocess.DEVNULL)
    src = sorted(os.path.join(src_dir, f) for f in os.listdir(src_dir))
    for split, per_class in (("train", a.per_class), ("val", 20)):
        for c in range(a.classes):
            d = os.path.join(a.root, split, "c%02d" % c)
            os.makedirs(d, exist_ok=True)
            for i in range(per_class):
                dst = os.path.join(d, "%05d.jpg" % i)
                if not os.path.exists(dst):
                    os.link(src[(c * 7919 + i) % len(src)], dst)
    print(f"{a.root}: {a.classes} classes x {a.per_class} training JPEGs (hard links to {len(src)} files)")


if __name__ == "__main__":
    main()
