"""mo_checkpoint.py: reads mo's checkpoint files (.mo) in Python, without the C++ tools.

    import mo_checkpoint
    ckpt = mo_checkpoint.load("output/run/checkpoints/best.mo")
    ckpt.tensors          # {"downsample_layers.0.conv1.weight": tensor, ...}: the model's state_dict
    ckpt.metadata         # {"model_name": "mambaout_femto", "epoch": 3, "class_names": [...], ...}
    ckpt.optimizer        # {"<param>.<slot>": tensor, ...} with load(..., optimizer=True), else {}
    ckpt.ema              # the model EMA's weights (timm's state_dict_ema), {} when the run kept none

Tensors are torch tensors when torch can be imported (backend="auto"), numpy arrays otherwise or with
backend="numpy". numpy has no bfloat16: a bfloat16 tensor becomes float32 in numpy (exact) and stays
bfloat16 in torch. Needs the standard library and numpy; torch is optional.

The format (tools/engine/checkpoint.proto, tools/engine/checkpoint.cpp):
    "MOCKPT01" | uint64 manifest size | Manifest (protobuf) | uint32 CRC32C of the manifest | payloads
every payload with its own CRC32C, all little-endian. The protobuf wire format and CRC32C are decoded
here by hand, and every check of the C++ reader is made: a truncated, corrupt or hostile file raises
CheckpointError (a ValueError) naming the file, never another exception or a wrong result.

Command line: python3 mo_checkpoint.py FILE.mo  prints the metadata and the tensors' names and shapes.
"""

import functools
import math
import os
import stat
import struct
import sys

import numpy as np

__all__ = ["CheckpointError", "Checkpoint", "load", "load_state_dict", "crc32c"]

MAGIC = b"MOCKPT01"
FORMAT_VERSION = 1
_HEADER_BYTES = 16
_MAX_MANIFEST = 1 << 31
_MAX_COUNTER = 1 << 40
_MAX_DIMS = 8
_DTYPES = {"float32": "<f4", "float64": "<f8", "int64": "<i8", "uint8": "u1", "bfloat16": "<u2"}


class CheckpointError(ValueError):
    """A file that is not a readable mo checkpoint; the message names the file."""


class Checkpoint:
    """The model tensors, the optimizer tensors (when asked for), the EMA weights (when the run kept an
    EMA) and the metadata of one .mo file."""

    def __init__(self, path, tensors, optimizer, ema, metadata):
        self.path, self.tensors, self.optimizer, self.ema, self.metadata = path, tensors, optimizer, ema, metadata

    def __repr__(self):
        return "Checkpoint(%r: %s, %d tensors, %d optimizer tensors, %d EMA tensors, epoch %d, step %d)" % (
            self.path, self.metadata["model_name"] or "unnamed model", len(self.tensors), len(self.optimizer),
            len(self.ema), self.metadata["epoch"], self.metadata["step"])


# --- CRC32C (Castagnoli, reflected polynomial 0x82F63B78), as tools/engine/crc32c.cpp -----------------

_POLY = 0x82F63B78


def _make_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ _POLY if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _make_table()
_NP_TABLE = np.array(_TABLE, dtype=np.uint32)


def _update(reg, data):
    """The CRC register after `data`, bytewise (no pre/post inversion)."""
    t = _TABLE
    for b in data:
        reg = (reg >> 8) ^ t[(reg ^ b) & 0xFF]
    return reg


# The register update over n zero bytes is linear over GF(2): a 32x32 bit matrix, kept as the images of the
# 32 unit vectors. It lets the payload be cut into K lanes that numpy advances side by side, then joined:
# crc(A | B) = shift_|B|(crc(A)) ^ crc(B) for registers started at 0.
def _mat_apply(mat, x):
    r, i = 0, 0
    while x:
        if x & 1:
            r ^= mat[i]
        x >>= 1
        i += 1
    return r


def _mat_square(mat):
    return [_mat_apply(mat, col) for col in mat]


def _shift_matrix(nbytes):
    one = [(1 << i >> 8) ^ _TABLE[(1 << i) & 0xFF] for i in range(32)]  # one zero byte
    result = [1 << i for i in range(32)]
    while nbytes:
        if nbytes & 1:
            result = [_mat_apply(one, col) for col in result]
        one = _mat_square(one)
        nbytes >>= 1
    return result


@functools.lru_cache(maxsize=64)
def _shift_chain(width):
    """For j = 0..18, the shift over width * 2^j zero bytes as a matrix and as four byte tables (tensors
    of similar sizes share them)."""
    mat, chain = _shift_matrix(width), []
    for _ in range(19):
        byte = np.arange(256, dtype=np.uint32)
        tables = []
        for k in range(4):
            t = np.zeros(256, dtype=np.uint32)
            for bit in range(8):
                t ^= np.where((byte >> np.uint32(bit)) & np.uint32(1) != 0, np.uint32(mat[8 * k + bit]), np.uint32(0))
            tables.append(t)
        chain.append((mat, tables))
        mat = _mat_square(mat)
    return chain


def _tables_apply(tables, v):
    t0, t1, t2, t3 = tables
    return (t0[v & np.uint32(0xFF)] ^ t1[(v >> np.uint32(8)) & np.uint32(0xFF)] ^
            t2[(v >> np.uint32(16)) & np.uint32(0xFF)] ^ t3[v >> np.uint32(24)])


def crc32c(data, crc=0):
    """CRC-32C of a bytes-like object (continuing from `crc`), equal to tools/engine/crc32c.cpp's."""
    data = memoryview(data).cast("B")
    n = len(data)
    reg = crc ^ 0xFFFFFFFF
    lanes = 1  # a power of two, each lane 64 to 127 bytes (more for tensors over 16 MiB)
    while lanes < (1 << 17) and lanes * 2 * 64 <= n:
        lanes *= 2
    if lanes < 64:  # small: bytewise
        return _update(reg, data) ^ 0xFFFFFFFF
    width = n // lanes
    block = np.frombuffer(data, dtype=np.uint8, count=lanes * width).reshape(lanes, width).T.copy()
    v = np.zeros(lanes, dtype=np.uint32)
    for row in block:  # every lane one byte further
        v = (v >> np.uint32(8)) ^ _NP_TABLE[(v ^ row) & np.uint32(0xFF)]
    shifts = _shift_chain(width)
    level = 0
    while len(v) > 1:  # join neighbours: the left one shifted over the right one's bytes
        v = _tables_apply(shifts[level][1], v[0::2]) ^ v[1::2]
        level += 1
    reg = _mat_apply(shifts[level][0], reg) ^ int(v[0])  # the shift over all lanes * width bytes
    return crc32c(data[lanes * width:], reg ^ 0xFFFFFFFF)  # the rest (fewer than `lanes` bytes)


# --- the protobuf wire format ---------------------------------------------------------------------------


class _Corrupt(Exception):
    pass


def _varint(buf, pos, end):
    result, shift = 0, 0
    while True:
        if pos >= end:
            raise _Corrupt("a varint runs past its message")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result & 0xFFFFFFFFFFFFFFFF, pos
        shift += 7
        if shift >= 70:
            raise _Corrupt("a varint longer than 10 bytes")


def _fields(buf, pos, end):
    """(field number, wire type, value) of each field in buf[pos:end]; value is (start, end) for wire type 2."""
    while pos < end:
        key, pos = _varint(buf, pos, end)
        num, wt = key >> 3, key & 7
        if num == 0 or key >> 32:
            raise _Corrupt("field number %d" % num)
        if wt == 0:
            value, pos = _varint(buf, pos, end)
        elif wt in (1, 5):
            size = 8 if wt == 1 else 4
            if end - pos < size:
                raise _Corrupt("a fixed-size field runs past its message")
            value, pos = bytes(buf[pos:pos + size]), pos + size
        elif wt == 2:
            size, pos = _varint(buf, pos, end)
            if size > end - pos:
                raise _Corrupt("a length-delimited field runs past its message (%d bytes)" % size)
            value, pos = (pos, pos + size), pos + size
        elif wt == 3:  # a group (no field of ours): skipped to its end, as protobuf skips unknown fields
            pos = _skip_group(buf, pos, end, num, 0)
            continue
        else:
            raise _Corrupt("wire type %d" % wt + (" (an end of group outside a group)" if wt == 4 else ""))
        yield num, wt, value


def _skip_group(buf, pos, end, group, depth):
    if depth > 64:
        raise _Corrupt("groups nested too deeply")
    while True:
        if pos >= end:
            raise _Corrupt("a group without its end")
        key, pos = _varint(buf, pos, end)
        num, wt = key >> 3, key & 7
        if num == 0 or key >> 32:
            raise _Corrupt("field number %d" % num)
        if wt == 4:
            if num != group:
                raise _Corrupt("an end of group %d inside group %d" % (num, group))
            return pos
        if wt == 0:
            _, pos = _varint(buf, pos, end)
        elif wt in (1, 5):
            pos += 8 if wt == 1 else 4
            if pos > end:
                raise _Corrupt("a fixed-size field runs past its message")
        elif wt == 2:
            size, pos = _varint(buf, pos, end)
            if size > end - pos:
                raise _Corrupt("a length-delimited field runs past its message (%d bytes)" % size)
            pos += size
        elif wt == 3:
            pos = _skip_group(buf, pos, end, num, depth + 1)
        else:
            raise _Corrupt("wire type %d" % wt)


def _signed(v, bits):
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


# Scalar kinds: (wire type, decoder of the raw value).
_SCALARS = {
    "int64": (0, lambda v: _signed(v, 64)),
    "int32": (0, lambda v: _signed(v, 32)),
    "uint64": (0, lambda v: v),
    "uint32": (0, lambda v: v & 0xFFFFFFFF),
    "bool": (0, lambda v: v != 0),
    "double": (1, lambda v: struct.unpack("<d", v)[0]),
}

# message name -> {field number: (key, kind, repeated)}; kind is a scalar kind, "string" or a message name.
_SCHEMA = {
    "TensorEntry": {1: ("name", "string", False), 2: ("dtype", "string", False), 3: ("shape", "int64", True),
                    4: ("offset", "uint64", False), 5: ("nbytes", "uint64", False), 6: ("crc32c", "uint32", False)},
    "RngState": {1: ("name", "string", False), 2: ("seed", "uint64", False), 3: ("stream", "uint64", False),
                 4: ("counter", "uint64", False)},
    "SamplerState": {1: ("epoch", "int64", False), 2: ("batches_done", "int64", False), 3: ("seed", "uint64", False),
                     4: ("world_size", "int32", False)},
    "Manifest": {1: ("format_version", "int32", False), 2: ("config_yaml", "string", False),
                 3: ("model_name", "string", False), 4: ("epoch", "int64", False), 5: ("step", "int64", False),
                 6: ("step_in_epoch", "int64", False), 7: ("model", "TensorEntry", True),
                 8: ("optimizer", "TensorEntry", True), 9: ("optimizer_step", "int64", False),
                 10: ("rng", "RngState", True), 11: ("sampler", "SamplerState", False),
                 12: ("has_metric", "bool", False), 13: ("metric", "double", False),
                 14: ("best_metric", "double", False), 15: ("best_epoch", "int64", False),
                 16: ("payload_bytes", "uint64", False), 17: ("wall_time", "double", False),
                 18: ("class_names", "string", True), 19: ("ema", "TensorEntry", True),
                 20: ("epoch_loss_sum", "double", False), 21: ("epoch_loss_count", "int64", False),
                 22: ("epoch_grad_norm_sum", "double", False), 23: ("epoch_grad_norm_count", "int64", False)},
}


def _defaults(name):
    out = {}
    for key, kind, repeated in _SCHEMA[name].values():
        if repeated:
            out[key] = []
        elif kind == "string":
            out[key] = ""
        elif kind in _SCHEMA:
            out[key] = _defaults(kind)
        else:
            out[key] = 0.0 if kind == "double" else (False if kind == "bool" else 0)
    return out


def _parse(name, buf, pos, end, out=None, depth=0):
    """Decodes message `name` from buf[pos:end] as protobuf's C++ parser does (proto3): the last value of
    a scalar wins, repeated scalars may be packed or not, a message seen twice is merged, unknown fields
    and fields of an unexpected wire type are skipped."""
    if depth > 8:
        raise _Corrupt("messages nested too deeply")
    out = _defaults(name) if out is None else out
    schema = _SCHEMA[name]
    for num, wt, value in _fields(buf, pos, end):
        if num not in schema:
            continue
        key, kind, repeated = schema[num]
        if kind == "string" or kind in _SCHEMA:
            if wt != 2:
                continue
            if kind in _SCHEMA:
                if repeated:
                    out[key].append(_parse(kind, buf, value[0], value[1], None, depth + 1))
                else:
                    _parse(kind, buf, value[0], value[1], out[key], depth + 1)
                continue
            try:
                text = bytes(buf[value[0]:value[1]]).decode("utf-8")
            except UnicodeDecodeError:
                raise _Corrupt("field '%s' of %s is not valid UTF-8" % (key, name)) from None
            if repeated:
                out[key].append(text)
            else:
                out[key] = text
            continue
        want, decode = _SCALARS[kind]
        if repeated and wt == 2 and want == 0:  # packed varints
            p, stop = value
            while p < stop:
                v, p = _varint(buf, p, stop)
                out[key].append(decode(v))
        elif wt == want:
            if repeated:
                out[key].append(decode(value))
            else:
                out[key] = decode(value)
    return out


# --- the file -----------------------------------------------------------------------------------------


def _fail(path, what):
    raise CheckpointError("checkpoint '%s' %s" % (path, what))


def _read_exact(f, n, path, what):
    data = f.read(n)
    if len(data) != n:
        _fail(path, "is truncated (reading %s)" % what)
    return data


def _check_ranges(m, path):
    """The bounds tools/engine/checkpoint.cpp checks (check_manifest_ranges)."""
    counters = [("epoch", m["epoch"], 0), ("step", m["step"], 0), ("step_in_epoch", m["step_in_epoch"], 0),
                ("optimizer_step", m["optimizer_step"], 0), ("sampler.epoch", m["sampler"]["epoch"], 0),
                ("sampler.batches_done", m["sampler"]["batches_done"], 0),
                ("sampler.world_size", m["sampler"]["world_size"], 1), ("best_epoch", m["best_epoch"], -1),
                ("epoch_loss_count", m["epoch_loss_count"], 0), ("epoch_grad_norm_count", m["epoch_grad_norm_count"], 0)]
    for field, v, lo in counters:
        if not lo <= v <= _MAX_COUNTER:
            _fail(path, "is corrupt: field '%s' is %d (must be from %d to 2^40)" % (field, v, lo))
    if not (math.isfinite(m["epoch_loss_sum"]) and math.isfinite(m["epoch_grad_norm_sum"])
            and m["epoch_grad_norm_sum"] >= 0):
        _fail(path, "is corrupt: fields 'epoch_loss_sum' (%r) and 'epoch_grad_norm_sum' (%r) must be finite (and the "
              "norm sum >= 0)" % (m["epoch_loss_sum"], m["epoch_grad_norm_sum"]))
    if m["step_in_epoch"] > m["step"] or m["epoch"] > m["step"]:
        _fail(path, "is corrupt: fields 'epoch' (%d) and 'step_in_epoch' (%d) cannot exceed 'step' (%d)" %
              (m["epoch"], m["step_in_epoch"], m["step"]))

    def pct(v):
        return 0 <= v <= 100  # NaN fails too

    if m["has_metric"] and not pct(m["metric"]):
        _fail(path, "is corrupt: field 'metric' is %r (a top-1 percentage from 0 to 100)" % m["metric"])
    if m["best_metric"] != -1.0 and not pct(m["best_metric"]):
        _fail(path, "is corrupt: field 'best_metric' is %r (-1 or a top-1 percentage from 0 to 100)" % m["best_metric"])


def _read_tensors(f, path, payload_start, payload_bytes, entries, backend):
    out = {}
    for e in entries:
        name = e["name"]
        if name in out:
            _fail(path, "is corrupt: tensor '%s' appears twice" % name)
        if e["dtype"] not in _DTYPES:
            _fail(path, "is corrupt: tensor '%s' has unknown dtype '%s'" % (name, e["dtype"]))
        dt = np.dtype(_DTYPES[e["dtype"]])
        shape = e["shape"]
        nbytes = dt.itemsize
        for d in shape:
            nbytes *= max(d, 0)
        if (len(shape) > _MAX_DIMS or any(d < 0 for d in shape) or nbytes != e["nbytes"]
                or e["offset"] + e["nbytes"] > payload_bytes):
            _fail(path, "is corrupt: tensor '%s' %s %s claims %d bytes at offset %d of a %d-byte payload" %
                  (name, e["dtype"], list(shape), e["nbytes"], e["offset"], payload_bytes))
        f.seek(payload_start + e["offset"])
        buf = bytearray(nbytes)
        if f.readinto(buf) != nbytes:
            _fail(path, "is truncated (reading %s)" % name)
        if crc32c(buf) != e["crc32c"]:
            _fail(path, "is corrupt: checksum mismatch in '%s'" % name)
        out[name] = _to_backend(np.frombuffer(buf, dtype=dt).reshape(shape), e["dtype"], backend)
    return out


def _to_backend(a, dtype, backend):
    if backend == "torch":
        import torch
        if dtype == "bfloat16":
            return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
        return torch.from_numpy(a)
    if dtype == "bfloat16":
        return (a.astype(np.uint32) << np.uint32(16)).view(np.float32)
    return a


def _pick_backend(backend):
    if backend not in ("auto", "torch", "numpy"):
        raise ValueError("backend must be 'auto', 'torch' or 'numpy', got %r" % (backend,))
    if backend != "auto":
        return backend
    try:
        import torch  # noqa: F401
        return "torch"
    except ImportError:
        return "numpy"


def load(path, optimizer=False, backend="auto", ema=True):
    """Reads a .mo file, verifying every checksum. Returns a Checkpoint: .tensors (the model's
    state_dict, official MambaOut names), .optimizer ("<param>.<slot>", only with optimizer=True) and
    .ema (the model EMA's weights, timm's state_dict_ema; empty when the run kept none or with ema=False) and
    .metadata. Raises CheckpointError naming the file if it is not a complete, intact mo checkpoint."""
    backend = _pick_backend(backend)
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except OSError as e:
        raise CheckpointError("cannot open checkpoint '%s': %s" % (path, e.strerror)) from None
    if stat.S_ISDIR(st.st_mode):
        _fail(path, "is a directory, not a checkpoint file")
    if not stat.S_ISREG(st.st_mode):  # a pipe would block for ever, a device never ends
        _fail(path, "is not a regular file (a named pipe, socket or device): refusing to read it")
    try:
        with open(path, "rb") as f:
            return _load(f, path, st.st_size, optimizer, ema, backend)
    except OSError as e:
        raise CheckpointError("cannot read checkpoint '%s': %s" % (path, e.strerror or e)) from None


def _load(f, path, file_size, optimizer, ema, backend):
    if _read_exact(f, 8, path, "the header") != MAGIC:
        raise CheckpointError("'%s' is not a mo checkpoint (bad magic)" % path)
    (size,) = struct.unpack("<Q", _read_exact(f, 8, path, "the header"))
    if size >= _MAX_MANIFEST:
        _fail(path, "is corrupt (manifest size %d)" % size)
    if _HEADER_BYTES + size + 4 > file_size:  # (not read: a hostile size would be allocated first)
        _fail(path, "is truncated or corrupt: a manifest of %d bytes does not fit in its %d bytes" % (size, file_size))
    manifest = _read_exact(f, size, path, "the manifest")
    (crc,) = struct.unpack("<I", _read_exact(f, 4, path, "the manifest checksum"))
    if crc != crc32c(manifest):
        _fail(path, "is corrupt (manifest checksum mismatch)")
    try:
        m = _parse("Manifest", memoryview(manifest), 0, len(manifest))
    except _Corrupt as e:
        _fail(path, "is corrupt (manifest does not parse: %s)" % e)
    if m["format_version"] != FORMAT_VERSION:
        _fail(path, "has format version %d, this reader reads %d" % (m["format_version"], FORMAT_VERSION))
    payload_start = _HEADER_BYTES + size + 4
    if file_size != payload_start + m["payload_bytes"]:
        _fail(path, "is truncated: %d bytes, the manifest describes %d" % (file_size, payload_start + m["payload_bytes"]))
    # Every entry inside the payload and all of them together fitting in it (entries over the same bytes
    # would let a small manifest claim memory without bound), before anything is read.
    total = 0
    for e in m["model"] + m["optimizer"] + m["ema"]:
        inside = e["offset"] + e["nbytes"] <= m["payload_bytes"]
        total += e["nbytes"]
        if not inside or total > m["payload_bytes"]:
            _fail(path, "is corrupt: tensor '%s' %s %s claims %d bytes at offset %d of a %d-byte payload%s" % (
                e["name"], e["dtype"], list(e["shape"]), e["nbytes"], e["offset"], m["payload_bytes"],
                "" if not inside else " that the tensors before it already fill (entries overlap)"))
    _check_ranges(m, path)
    tensors = _read_tensors(f, path, payload_start, m["payload_bytes"], m["model"], backend)
    opt = _read_tensors(f, path, payload_start, m["payload_bytes"], m["optimizer"], backend) if optimizer else {}
    ema = _read_tensors(f, path, payload_start, m["payload_bytes"], m["ema"], backend) if ema else {}
    meta = {k: v for k, v in m.items() if k not in ("model", "optimizer", "ema", "has_metric")}
    meta["metric"] = m["metric"] if m["has_metric"] else None
    meta["optimizer_tensors"] = [e["name"] for e in m["optimizer"]]
    return Checkpoint(path, tensors, opt, ema, meta)


def load_state_dict(path, backend="auto"):
    """The model's tensors of a .mo file: {name: tensor}, as torch's model.load_state_dict takes them."""
    return load(path, backend=backend).tensors


def main(argv):
    if len(argv) != 2 or argv[1].startswith("-"):
        print("usage: python3 mo_checkpoint.py FILE.mo", file=sys.stderr)
        return 0 if len(argv) == 2 and argv[1] in ("-h", "--help") else 2
    try:
        ckpt = load(argv[1], backend="numpy")
    except CheckpointError as e:
        print("mo_checkpoint: error: %s" % e, file=sys.stderr)
        return 1
    m = ckpt.metadata
    print("%s: %s, epoch %d, step %d, %d classes named, metric %s" % (
        ckpt.path, m["model_name"] or "(no model name)", m["epoch"], m["step"], len(m["class_names"]),
        "none" if m["metric"] is None else "%.3f" % m["metric"]))
    for name, t in ckpt.tensors.items():
        print("  %s %s %s" % (name, t.dtype, list(t.shape)))
    print("%d tensors, %d parameters; %d optimizer tensors, %d EMA tensors" % (
        len(ckpt.tensors), sum(int(t.size) for t in ckpt.tensors.values()), len(m["optimizer_tensors"]),
        len(ckpt.ema)))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except BrokenPipeError:  # the listing piped into head
        sys.stderr.close()
        sys.exit(0)
