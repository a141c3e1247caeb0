# png_webp_ref.py: test images for tests/data/test_data_image_decode.cpp and the pixels PIL gives them.
# Writes OUT/<name>.png|.webp and OUT/<name>.rgb, the bytes of Image.open(f).convert('RGB') (what timm's
# loader feeds a model), plus OUT/<name>.size ("w h"). PIL cannot write every PNG kind (16-bit colour,
# 2/4-bit gray, a palette shorter than the indices used): those are written here chunk by chunk.
# Usage: python3 png_webp_ref.py OUT
import struct
import sys
import zlib

import numpy as np
from PIL import Image

out = sys.argv[1]
W, H = 37, 23
rng = np.random.default_rng(7)
yy, xx = np.mgrid[0:H, 0:W]
rgb8 = np.stack([xx * 255 // (W - 1), yy * 255 // (H - 1), (xx * yy) % 256], -1).astype(np.uint8)
rgb8[::5, ::3] = rng.integers(0, 256, rgb8[::5, ::3].shape)
alpha8 = ((xx * 7 + yy * 13) % 256).astype(np.uint8)
alpha8[0, :5] = 0


def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png(path, depth, color_type, rows, plte=None, trns=None, adam7=None):
    """rows: a list of the packed bytes of each row (without the filter byte). adam7: instead of rows,
    the 8-bit pixel array (H, W, C) written interlaced."""
    if adam7 is None:
        raw = b"".join(b"\x00" + r for r in rows)
    else:  # the seven passes: (x0, y0, dx, dy), each a small image of its own, rows filtered with 0
        raw = b""
        for x0, y0, dx, dy in [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]:
            sub = adam7[y0::dy, x0::dx]
            if sub.size:
                raw += b"".join(b"\x00" + r.tobytes() for r in sub)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", W, H, depth, color_type, 0, 0,
                                                               0 if adam7 is None else 1))
    if plte is not None:
        data += chunk(b"PLTE", plte)
    if trns is not None:
        data += chunk(b"tRNS", trns)
    data += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    open(path, "wb").write(data)


def pack_bits(vals, depth):
    """One row of samples of `depth` < 8 bits, packed MSB first."""
    per = 8 // depth
    vals = list(vals) + [0] * (-len(vals) % per)
    out = bytearray()
    for i in range(0, len(vals), per):
        b = 0
        for v in vals[i : i + per]:
            b = (b << depth) | int(v)
        out.append(b)
    return bytes(out)


files = {}
# PIL-written kinds
Image.fromarray(rgb8, "RGB").save(f"{out}/rgb8.png")
Image.fromarray(np.dstack([rgb8, alpha8]), "RGBA").save(f"{out}/rgba8.png")
Image.fromarray(rgb8[..., 0], "L").save(f"{out}/gray8.png")
Image.fromarray(np.dstack([rgb8[..., 1], alpha8]), "LA").save(f"{out}/graya8.png")
Image.fromarray(rgb8, "RGB").quantize(200).save(f"{out}/palette8.png")
pal = Image.fromarray(rgb8, "RGB").quantize(60)
pal.info["transparency"] = 3
pal.save(f"{out}/palette_trns.png", transparency=3)
Image.fromarray(rgb8[..., 0] > 128).save(f"{out}/gray1.png")
g16 = (xx * 1777 + yy * 97).astype(np.uint16)
g16[:, :4] = np.arange(4 * H).reshape(H, 4)  # values under 256 too: PIL keeps those, clips the rest
Image.fromarray(g16, "I;16").save(f"{out}/gray16.png")
# hand-written kinds
rgb16 = (rgb8.astype(np.uint16) * 257 + rng.integers(0, 256, rgb8.shape)).astype(">u2")
write_png(f"{out}/rgb16.png", 16, 2, [r.tobytes() for r in rgb16])
rgba16 = np.dstack([rgb16, (alpha8.astype(np.uint16) * 257).astype(">u2")])
write_png(f"{out}/rgba16.png", 16, 6, [r.tobytes() for r in rgba16])
ga16 = np.dstack([rgb16[..., 2], rgb16[..., 0]])
write_png(f"{out}/graya16.png", 16, 4, [r.tobytes() for r in ga16])
write_png(f"{out}/rgba8_interlaced.png", 8, 6, None, adam7=np.dstack([rgb8, alpha8]))
for d in (2, 4):
    g = (xx + yy) % (1 << d)
    write_png(f"{out}/gray{d}.png", d, 0, [pack_bits(r, d) for r in g])
idx = (xx * 3 + yy) % 16
plte4 = bytes(rng.integers(0, 256, 16 * 3).astype(np.uint8))
write_png(f"{out}/palette4.png", 4, 3, [pack_bits(r, 4) for r in idx], plte=plte4, trns=b"\x00\x80")
short = (xx * 5 + yy * 11) % 256  # indices past the 20 PLTE entries: PIL's grey ramp
write_png(f"{out}/palette_short.png", 8, 3, [bytes(r.astype(np.uint8)) for r in short],
          plte=bytes(rng.integers(0, 256, 20 * 3).astype(np.uint8)))
# WebP
Image.fromarray(rgb8, "RGB").save(f"{out}/lossless.webp", lossless=True)
Image.fromarray(np.dstack([rgb8, alpha8]), "RGBA").save(f"{out}/lossless_rgba.webp", lossless=True, exact=True)
Image.fromarray(rgb8, "RGB").save(f"{out}/lossy.webp", quality=80)
Image.fromarray(np.dstack([rgb8, alpha8]), "RGBA").save(f"{out}/lossy_rgba.webp", quality=80)
frames = [Image.fromarray(np.dstack([np.roll(rgb8, 5 * i, 1), alpha8]), "RGBA") for i in range(3)]
frames[0].save(f"{out}/animated.webp", save_all=True, append_images=frames[1:], duration=50, lossless=True)

import os

for name in sorted(os.listdir(out)):
    if not name.endswith((".png", ".webp")):
        continue
    im = Image.open(f"{out}/{name}")
    im.load()
    rgb = im.convert("RGB")
    stem = name.rsplit(".", 1)[0]
    open(f"{out}/{stem}.rgb", "wb").write(rgb.tobytes())
    open(f"{out}/{stem}.size", "w").write(f"{rgb.width} {rgb.height} {im.mode}\n")
