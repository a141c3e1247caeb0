#!/usr/bin/python3
"""make_bench_images.py: the benchmark input of tools/mo_bench_data and scripts/data/bench_peer.py:
500x375 quality-90 JPEGs (4:2:0, PIL defaults), resized/cropped/flipped variants of real photographs.

Usage: /usr/bin/python3 scripts/data/make_bench_images.py OUT_DIR [COUNT] [SOURCE ...]
SOURCE: image files (default: tests/data/images/*.jpg). docs/bench_data.md used the colour photographs of
Debian's python3-skimage data folder (astronaut, chelsea, coffee, motorcycle_left, rocket), taken with
`apt-get download python3-skimage && dpkg-deb -x python3-skimage_*.deb x/`.
Deterministic (seeded); each variant is a random crop (50-100% of the side, any position) resized to
500x375 with PIL bicubic, sometimes mirrored, sometimes brightened or darkened a little.
"""
import glob
import os
import random
import sys

from PIL import Image, ImageEnhance

out = sys.argv[1]
count = int(sys.argv[2]) if len(sys.argv) > 2 else 200
here = os.path.dirname(os.path.abspath(__file__))
sources = sys.argv[3:] or sorted(glob.glob(os.path.join(here, "../../tests/data/images/*.jpg")))
os.makedirs(out, exist_ok=True)
rng = random.Random(1234)
photos = [Image.open(s).convert("RGB") for s in sources]
for i in range(count):
    im = photos[i % len(photos)]
    w, h = im.size
    f = rng.uniform(0.5, 1.0)
    cw, ch = int(w * f), int(h * f)
    # keep 4:3 when the source allows it
    if cw * 3 > ch * 4:
        cw = ch * 4 // 3
    else:
        ch = cw * 3 // 4
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    v = im.crop((x, y, x + cw, y + ch)).resize((500, 375), Image.BICUBIC)
    if rng.random() < 0.5:
        v = v.transpose(Image.FLIP_LEFT_RIGHT)
    v = ImageEnhance.Brightness(v).enhance(rng.uniform(0.85, 1.15))
    v.save(os.path.join(out, f"bench_{i:04d}.jpg"), "JPEG", quality=90)
print(f"{count} images in {out}")
