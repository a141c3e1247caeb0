#!/usr/bin/python3
"""parity_ref.py: the PIL / torchvision side of tests/data/test_data_parity.cpp.

Reads a case list (one case per line: NAME KIND ARGS...) and writes NAME.raw (uint8 H x W x 3) plus a
line "NAME W H" to OUT_DIR/index.txt for each. Kinds:
  decode PATH                                  Image.open(PATH).convert("RGB")
  eval PATH SIZE CROP_PCT INTERP               timm eval: Resize(floor(SIZE / CROP_PCT)) + CenterCrop(SIZE)
  rrc PATH X Y W H SIZE INTERP FLIP            torchvision F.resized_crop (+ F.hflip)
  op PATH OP MAGNITUDE NEGATE INTERP           one RandAugment op, as timm 0.6.11 auto_augment.py calls PIL
Usage: /usr/bin/python3 parity_ref.py CASES OUT_DIR
The op functions below are transcribed from timm/data/auto_augment.py (timm is not a Debian package);
fill (124, 116, 104) and translate_pct 0.45 are the training recipe's hparams.
"""
import math
import sys

import numpy as np
from PIL import Image, ImageEnhance, ImageOps
import torchvision.transforms.functional as F
from torchvision.transforms import InterpolationMode

INTERP = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}
PIL_INTERP = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}
FILL = (124, 116, 104)


def affine(img, m, interp):
    return img.transform(img.size, Image.AFFINE, m, resample=PIL_INTERP[interp], fillcolor=FILL)


def solarize_add(img, add, thresh=128):
    lut = [min(255, i + add) if i < thresh else i for i in range(256)]
    return img.point(lut * 3)


def run_op(img, name, m, negate, interp):
    level = m / 10.0
    sgn = (lambda v: -v) if negate else (lambda v: v)
    enh = level * 1.8 + 0.1
    inc = max(0.1, 1.0 + sgn(level * 0.9))
    ops = {
        "AutoContrast": lambda: ImageOps.autocontrast(img),
        "Equalize": lambda: ImageOps.equalize(img),
        "Invert": lambda: ImageOps.invert(img),
        "Rotate": lambda: img.rotate(sgn(level * 30.0), resample=PIL_INTERP[interp], fillcolor=FILL),
        "Posterize": lambda: ImageOps.posterize(img, int(level * 4)) if int(level * 4) < 8 else img,
        "PosterizeIncreasing": lambda: ImageOps.posterize(img, 4 - int(level * 4)),
        "Solarize": lambda: ImageOps.solarize(img, int(level * 256)),
        "SolarizeIncreasing": lambda: ImageOps.solarize(img, 256 - int(level * 256)),
        "SolarizeAdd": lambda: solarize_add(img, int(level * 110)),
        "Color": lambda: ImageEnhance.Color(img).enhance(enh),
        "ColorIncreasing": lambda: ImageEnhance.Color(img).enhance(inc),
        "Contrast": lambda: ImageEnhance.Contrast(img).enhance(enh),
        "ContrastIncreasing": lambda: ImageEnhance.Contrast(img).enhance(inc),
        "Brightness": lambda: ImageEnhance.Brightness(img).enhance(enh),
        "BrightnessIncreasing": lambda: ImageEnhance.Brightness(img).enhance(inc),
        "Sharpness": lambda: ImageEnhance.Sharpness(img).enhance(enh),
        "SharpnessIncreasing": lambda: ImageEnhance.Sharpness(img).enhance(inc),
        "ShearX": lambda: affine(img, (1, sgn(level * 0.3), 0, 0, 1, 0), interp),
        "ShearY": lambda: affine(img, (1, 0, 0, sgn(level * 0.3), 1, 0), interp),
        "TranslateXRel": lambda: affine(img, (1, 0, sgn(level * 0.45) * img.size[0], 0, 1, 0), interp),
        "TranslateYRel": lambda: affine(img, (1, 0, 0, 0, 1, sgn(level * 0.45) * img.size[1]), interp),
    }
    return ops[name]()


def load(path):
    return Image.open(path).convert("RGB")


def main():
    cases, out_dir = sys.argv[1], sys.argv[2]
    index = []
    for line in open(cases):
        a = line.split()
        if not a:
            continue
        name, kind = a[0], a[1]
        img = load(a[2])
        if kind == "decode":
            res = img
        elif kind == "eval":
            size, crop_pct, interp = int(a[3]), float(a[4]), a[5]
            res = F.resize(img, math.floor(size / crop_pct), INTERP[interp])
            res = F.center_crop(res, size)
        elif kind == "rrc":
            x, y, w, h, size = map(int, a[3:8])
            res = F.resized_crop(img, y, x, h, w, [size, size], INTERP[a[8]])
            if a[9] == "1":
                res = F.hflip(res)
        elif kind == "op":
            res = run_op(img, a[3], float(a[4]), a[5] == "1", a[6])
        else:
            raise SystemExit(f"parity_ref.py: unknown kind {kind!r} in {cases}")
        arr = np.asarray(res.convert("RGB"), dtype=np.uint8)
        arr.tofile(f"{out_dir}/{name}.raw")
        index.append(f"{name} {arr.shape[1]} {arr.shape[0]}")
    with open(f"{out_dir}/index.txt", "w") as f:
        f.write("\n".join(index) + "\n")


if __name__ == "__main__":
    main()
