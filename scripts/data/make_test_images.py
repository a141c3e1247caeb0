#!/usr/bin/python3
"""make_test_images.py: how tests/data/images/*.jpg were made (kept for provenance; CI does not run it).

Source photographs: Debian's python3-skimage 0.19.3 data folder (skimage/data), fetched without
installing the package:  apt-get download python3-skimage && dpkg-deb -x python3-skimage_*.deb x/
  chelsea.png (cat, CC0), coffee.png (CC0), astronaut.png (NASA, public domain), rocket.jpg (NASA, public domain).
Usage: /usr/bin/python3 scripts/data/make_test_images.py SKIMAGE_DATA_DIR OUT_DIR
"""
import sys
from PIL import Image

src, out = sys.argv[1], sys.argv[2]
# name, source, size (w, h), save options: a mix of odd sizes, portrait, 4:2:0 / 4:4:4 and progressive.
specs = [
    ("chelsea.jpg", "chelsea.png", (451, 300), dict(quality=90)),
    ("coffee.jpg", "coffee.png", (450, 300), dict(quality=90, subsampling=0)),
    ("astronaut.jpg", "astronaut.png", (384, 384), dict(quality=88)),
    ("rocket.jpg", "rocket.jpg", (281, 421), dict(quality=90, progressive=True)),
]
for name, source, size, opts in specs:
    im = Image.open(f"{src}/{source}").convert("RGB")
    if im.size != size:
        im = im.resize(size, Image.LANCZOS)
    im.save(f"{out}/{name}", "JPEG", **opts)
    print(name, im.size)
