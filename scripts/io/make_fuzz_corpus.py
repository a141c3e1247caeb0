"""make_fuzz_corpus.py: writes the seed corpus of the checkpoint-reader fuzz targets into tests/fuzz/corpus/
(committed; rerun only to refresh it): small torch.save files (fuzz_pth), their data.pkl pickles plus plain
pickles of every protocol (fuzz_torch_pickle), small safetensors files (fuzz_safetensors).
Usage: /usr/bin/python3 scripts/io/make_fuzz_corpus.py [OUT_DIR]
"""
import argparse
import collections
import io
import json
import os
import pickle
import struct
import sys
import zipfile

import torch


def st_bytes(tensors, metadata=None):
    """A safetensors file, written by hand (the format is small) so the package is not needed."""
    header, blobs, at = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    names = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64",
             torch.uint8: "U8", torch.bool: "BOOL", torch.float64: "F64"}
    for k, t in tensors.items():
        b = t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[k] = {"dtype": names[t.dtype], "shape": list(t.shape), "data_offsets": [at, at + len(b)]}
        blobs.append(b)
        at += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser()
    p.add_argument("out", nargs="?", default=os.path.join(here, "..", "..", "tests", "fuzz", "corpus"))
    out = p.parse_args().out
    for t in ("fuzz_pth", "fuzz_torch_pickle", "fuzz_safetensors"):
        os.makedirs(os.path.join(out, t), exist_ok=True)
    torch.manual_seed(0)
    flat = torch.arange(16, dtype=torch.float32)
    cases = {
        "flat": collections.OrderedDict([("w", torch.randn(3, 4)), ("b", torch.randn(4))]),
        "views": collections.OrderedDict([("whole", flat), ("t", flat.view(4, 4).t()), ("s", flat[3:9]),
                                          ("e", flat[:2].unsqueeze(0).expand(3, 2)), ("scalar", flat[5])]),
        "dtypes": collections.OrderedDict([("h", torch.ones(3).half()), ("bf", torch.ones(2).bfloat16()),
                                           ("d", torch.ones(2).double()), ("n", torch.tensor(7)),
                                           ("m", torch.tensor([True, False])), ("z", torch.zeros(0, 3))]),
        "wrapped": {"epoch": 3, "arch": "mambaout_femto", "state_dict": {"module.x": torch.ones(2)},
                    "optimizer": {"state": {0: {"step": torch.tensor(1.0)}}, "param_groups": [{"lr": 0.1,
                                  "betas": (0.9, 0.999), "params": [0]}]},
                    "args": argparse.Namespace(lr=4e-3, model="m", aa=None, mean=(0.5, 0.5))},
        "params": collections.OrderedDict([("p", torch.nn.Parameter(torch.ones(2, 2)))]),
    }
    for name, obj in cases.items():
        buf = io.BytesIO()
        torch.save(obj, buf)
        data = buf.getvalue()
        open(os.path.join(out, "fuzz_pth", name + ".pth"), "wb").write(data)
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            pkl = [n for n in z.namelist() if n.endswith("data.pkl")][0]
            open(os.path.join(out, "fuzz_torch_pickle", name + ".pkl"), "wb").write(z.read(pkl))
    plain = collections.OrderedDict([("a", [1, -2, 3.5, None, True]), ("b", (b"xy", "z", ())), ("c", {7}),
                                     ("big", 2 ** 40), ("huge", 2 ** 70)])
    for proto in range(6):
        open(os.path.join(out, "fuzz_torch_pickle", "plain_p%d.pkl" % proto), "wb").write(
            pickle.dumps(plain, protocol=proto))
    st = {
        "flat": (cases["flat"], None),
        "dtypes": (collections.OrderedDict((k, v) for k, v in cases["dtypes"].items()), {"format": "pt"}),
        "empty": (collections.OrderedDict(), None),
        "escapes": (collections.OrderedDict([("na\"me\\\u00e9", torch.ones(1))]), {"k": "v\n\u263a"}),
    }
    for name, (tensors, meta) in st.items():
        open(os.path.join(out, "fuzz_safetensors", name + ".safetensors"), "wb").write(st_bytes(tensors, meta))
    print("corpus written to", os.path.abspath(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
