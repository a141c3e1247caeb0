"""make_fuzz_corpus.py: writes the seed corpus of the checkpoint-reader fuzz targets into tests/fuzz/corpus/
(committed; rerun only to refresh it): small torch.save files (fuzz_pth), their data.pkl pickles plus plain
pickles of every protocol (fuzz_torch_pickle), small safetensors files (fuzz_safetensors), both kinds again
for the file-to-tensor path (fuzz_to_tensor), and small mo checkpoints (fuzz_mo_checkpoint). Besides valid
files, each target gets seeds of the size-overflow class (hostile_*): views and shapes whose
numel x element size or offset + extent wraps past 2^64, huge strides and offsets, negative dims, many
names over one storage, and .mo manifests whose entries do not fit the payload.
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

TARGETS = ("fuzz_pth", "fuzz_torch_pickle", "fuzz_safetensors", "fuzz_to_tensor", "fuzz_mo_checkpoint")


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


class _Storage:
    """A storage record of a crafted torch.save file: pickled as its persistent id."""
    def __init__(self, key, cls, numel):
        self.key, self.cls, self.numel = key, cls, numel


class _View:
    """A tensor view with any offset, size and stride (torch itself would refuse the hostile ones)."""
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, tuple(size), tuple(stride), False, collections.OrderedDict())

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, self.args)


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        return ("storage", obj.cls, obj.key, "cpu", obj.numel) if isinstance(obj, _Storage) else None


def crafted_pth(views, records):
    """A torch.save-layout zip of an OrderedDict name -> (storage, offset, size, stride) over `records`."""
    storages = {}
    sd = collections.OrderedDict()
    for name, (key, cls, numel, offset, size, stride) in views.items():
        st = storages.setdefault((key, cls, numel), _Storage(key, cls, numel))
        sd[name] = _View(st, offset, size, stride)
    pkl = io.BytesIO()
    _Pickler(pkl, protocol=2).dump(sd)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:  # fixed timestamps: same bytes on every run
        files = [("archive/data.pkl", pkl.getvalue())] + [("archive/data/" + k, d) for k, d in records.items()]
        for name, data in files + [("archive/version", b"3\n")]:
            z.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), data)
    return out.getvalue(), pkl.getvalue()


def hostile_pth():
    f, d = torch.FloatStorage, torch.DoubleStorage
    big = 2 ** 62
    four = struct.pack("<4f", 0, 1, 2, 3)
    cases = {
        "wrap_itemsize": ({"w": ("0", d, 1, 0, [2 ** 61], [0])}, {"0": bytes(8)}),
        "wrap_numel": ({"w": ("0", f, 4, 0, [2 ** 32, 2 ** 32], [0, 0])}, {"0": four}),
        "wrap_bytes_2d": ({"w": ("0", f, 4, 0, [2 ** 31, 2 ** 31], [0, 0])}, {"0": four}),
        "wrap_storage": ({"w": ("0", d, 2 ** 61, 0, [1], [1])}, {"0": bytes(8)}),
        "huge_stride": ({"w": ("0", f, 4, 0, [3], [big])}, {"0": four}),
        "huge_stride_sum": ({"w": ("0", f, 4, 0, [2, 2], [big, big])}, {"0": four}),
        "huge_offset": ({"w": ("0", f, 4, 2 ** 63 - 1, [2], [1])}, {"0": four}),
        "negative": ({"a": ("0", f, 4, 0, [-1, 4], [4, 1]), "b": ("0", f, 4, 0, [2], [-1]),
                      "c": ("0", f, 4, -4, [2], [1])}, {"0": four}),
        "unit_dims": ({"ok": ("0", f, 4, 1, [1, 3, 1], [2 ** 63 - 1, 1, 2 ** 63 - 1]),
                       "st": ("0", f, 4, 0, [2, 1, 2], [1, 2 ** 63 - 1, 2])}, {"0": four}),
        "aliases": ({"e%d" % i: ("0", f, 4, i % 4, [1 << 18], [0]) for i in range(80)}, {"0": four}),
        "shared": ({"n%d" % i: ("0", f, 4, i % 3, [2], [1]) for i in range(64)}, {"0": four}),
        "two_dtypes": ({"f": ("0", f, 4, 0, [2], [0]), "d": ("0", d, 2, 0, [2], [0])}, {"0": four}),
    }
    return {name: crafted_pth(views, records) for name, (views, records) in cases.items()}


def hostile_safetensors():
    def file(header, data=b""):
        h = json.dumps(header, separators=(",", ":")).encode()
        return struct.pack("<Q", len(h)) + h + data
    t = lambda dt, shape, offs: {"w": {"dtype": dt, "shape": shape, "data_offsets": offs}}
    return {
        "wrap_f32": file(t("F32", [2 ** 31, 2 ** 31], [0, 0])),
        "wrap_f64": file(t("F64", [2 ** 61], [0, 0])),
        "wrap_numel": file(t("U8", [2 ** 32, 2 ** 32], [0, 0])),
        "huge_dim": file(t("U8", [2 ** 63 - 1, 2], [0, 0])),
        "huge_offsets": file(t("U8", [2 ** 60], [0, 2 ** 60])),
        "offset_wrap": file(t("U8", [4], [2 ** 63 - 1, 2 ** 63 + 3]), bytes(4)),
        "negative": file(t("F32", [2, -1], [0, 0])),
        "many_dims": file(t("U8", [1] * 70, [0, 1]), bytes(1)),
    }


def _crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def _varint(n):
    n &= (1 << 64) - 1  # int64 fields: two's complement
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _pb(field, value):
    """One protobuf field: int -> varint, str/bytes -> length-delimited, list of int -> packed."""
    if isinstance(value, int):
        return _varint(field << 3) + _varint(value)
    if isinstance(value, list):
        value = b"".join(_varint(v) for v in value)
    if isinstance(value, str):
        value = value.encode()
    return _varint(field << 3 | 2) + _varint(len(value)) + value


def mo_file(entries, payload, payload_bytes=None, manifest_size=None, optimizer=()):
    """A mo checkpoint (tools/engine/checkpoint.proto): entries are (name, dtype, shape, offset, nbytes)."""
    def entry(name, dtype, shape, offset, nbytes):
        crc = _crc32c(payload[offset:offset + nbytes]) if offset + nbytes <= len(payload) else 0
        return (_pb(1, name) + _pb(2, dtype) + (_pb(3, shape) if shape else b"") + _pb(4, offset) + _pb(5, nbytes) +
                _pb(6, crc))
    m = _pb(1, 1) + _pb(3, "test_mambaout") + _pb(4, 1) + _pb(5, 3)
    m += b"".join(_pb(7, entry(*e)) for e in entries) + b"".join(_pb(8, entry(*e)) for e in optimizer)
    m += _pb(16, len(payload) if payload_bytes is None else payload_bytes) + _pb(18, "cat") + _pb(18, "dog")
    size = len(m) if manifest_size is None else manifest_size
    return b"MOCKPT01" + struct.pack("<Q", size) + m + struct.pack("<I", _crc32c(m)) + payload


def mo_seeds():
    payload = struct.pack("<6f", *range(6)) + bytes([1, 2, 3, 4]) + struct.pack("<q", 7) + struct.pack("<6f", *range(6))
    ok = [("w", "float32", [2, 3], 0, 24), ("mask", "uint8", [4], 24, 4), ("n", "int64", [], 28, 8),
          ("empty", "float32", [0, 3], 36, 0)]
    return {
        "valid": mo_file(ok, payload, optimizer=[("w.exp_avg", "float32", [2, 3], 36, 24)]),
        "hostile_shape_wrap": mo_file([("w", "float32", [2 ** 31, 2 ** 31], 0, 0)], payload),
        "hostile_negative_dim": mo_file([("w", "float32", [-2, 3], 0, 24)], payload),
        "hostile_offset_wrap": mo_file([("w", "float32", [2, 3], 2 ** 64 - 1, 24)], payload),
        "hostile_huge_nbytes": mo_file([("w", "uint8", [2 ** 62], 0, 2 ** 62)], payload),
        "hostile_aliases": mo_file([("w%d" % i, "float32", [2, 3], 0, 24) for i in range(32)], payload),
        "hostile_payload_size": mo_file(ok, payload, payload_bytes=2 ** 64 - 1),
        "hostile_manifest_size": mo_file(ok, payload, manifest_size=2 ** 31 - 1),
        "hostile_rank": mo_file([("w", "uint8", [1] * 80, 0, 1)], payload),
    }


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser()
    p.add_argument("out", nargs="?", default=os.path.join(here, "..", "..", "tests", "fuzz", "corpus"))
    out = p.parse_args().out
    for t in TARGETS:
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
        data = st_bytes(tensors, meta)
        for t in ("fuzz_safetensors", "fuzz_to_tensor"):
            open(os.path.join(out, t, name + ".safetensors"), "wb").write(data)
    for name in ("flat", "views", "dtypes"):
        data = open(os.path.join(out, "fuzz_pth", name + ".pth"), "rb").read()
        open(os.path.join(out, "fuzz_to_tensor", name + ".pth"), "wb").write(data)
    # The size-overflow class.
    for name, (zip_bytes, pkl) in hostile_pth().items():
        for t in ("fuzz_pth", "fuzz_to_tensor"):
            open(os.path.join(out, t, "hostile_" + name + ".pth"), "wb").write(zip_bytes)
        open(os.path.join(out, "fuzz_torch_pickle", "hostile_" + name + ".pkl"), "wb").write(pkl)
    for name, data in hostile_safetensors().items():
        for t in ("fuzz_safetensors", "fuzz_to_tensor"):
            open(os.path.join(out, t, "hostile_" + name + ".safetensors"), "wb").write(data)
    for name, data in mo_seeds().items():
        open(os.path.join(out, "fuzz_mo_checkpoint", name + ".mo"), "wb").write(data)
    print("corpus written to", os.path.abspath(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
