"""check_mo_checkpoint.py: tests python/mo_checkpoint.py against files the C++ tools wrote
(run by tests/install/test_python_reader.cpp with Debian's python3, which has torch).

    check_mo_checkpoint.py PYTHON_DIR CKPT.mo EXPORT.pth EMA.pth EXPECTED.json OPT_NPY_DIR SCRATCH_DIR

- the model and EMA tensors equal, bit for bit, the .pth files that mo_convert exported (state_dict and
  --entry state_dict_ema, read with torch.load); the
  optimizer tensors equal the .npy files the C++ reader wrote; the metadata equals EXPECTED.json (the
  C++ reader's view); numpy and torch backends agree; crc32c matches the check value.
- hostile files: every single-byte change, truncations, manifests re-encoded with bad values, and
  random edits of the manifest with a valid checksum each load or raise CheckpointError naming the
  file, nothing else. The edited files go to SCRATCH_DIR/corpus with Python's verdict in
  SCRATCH_DIR/verdicts.txt, for the C++ reader to compare.
Exit status 0 when everything holds; each failure is printed.
"""

import json
import math
import os
import random
import struct
import subprocess
import sys

import numpy as np
import torch

sys.path.insert(0, sys.argv[1])
import mo_checkpoint as mc  # noqa: E402

CKPT, PTH, EMA_PTH, EXPECTED, OPT_DIR, SCRATCH = sys.argv[2:8]
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


# --- agreement with the C++ tools ---------------------------------------------------------------------

check(mc.crc32c(b"123456789") == 0xE3069283, "crc32c check value")
ck = mc.load(CKPT, optimizer=True)


def expect_same(ours, pth, what):
    ref = torch.load(pth, map_location="cpu")
    if isinstance(ref, dict) and "state_dict" in ref:
        ref = ref["state_dict"]
    check(len(ours) > 0 and list(ours) == list(ref), "%s names %s vs the .pth's %s" % (what, list(ours)[:5], list(ref)[:5]))
    for name, t in ours.items():
        r = ref.get(name)
        check(isinstance(t, torch.Tensor) and r is not None and t.dtype == r.dtype and t.shape == r.shape
              and torch.equal(t, r), "%s tensor %s differs from the .pth" % (what, name))


expect_same(ck.tensors, PTH, "model")
expect_same(ck.ema, EMA_PTH, "EMA")
check(any(not torch.equal(ck.ema[n], t) for n, t in ck.tensors.items()), "the EMA equals the weights")
check(mc.load(CKPT, ema=False).ema == {}, "EMA tensors read with ema=False")
exp = json.load(open(EXPECTED))
for key in ("model_name", "epoch", "step", "step_in_epoch", "optimizer_step", "best_metric", "best_epoch",
            "class_names", "config_yaml", "rng", "sampler", "metric", "epoch_loss_sum", "epoch_loss_count",
            "epoch_grad_norm_sum", "epoch_grad_norm_count"):
    check(ck.metadata[key] == exp[key], "metadata %s: %r, the C++ reader %r" % (key, ck.metadata[key], exp[key]))
check(list(ck.optimizer) == exp["optimizer"], "optimizer tensor names")
for i, name in enumerate(exp["optimizer"]):
    want = np.load(os.path.join(OPT_DIR, "%d.npy" % i))
    got = ck.optimizer.get(name)
    check(got is not None and np.array_equal(got.numpy(), want), "optimizer tensor %s differs" % name)
npck = mc.load(CKPT, backend="numpy")
check(npck.optimizer == {}, "optimizer tensors read without optimizer=True")
for name, a in npck.tensors.items():
    check(isinstance(a, np.ndarray) and np.array_equal(a, ck.tensors[name].numpy()), "numpy backend: %s" % name)
check(set(mc.load_state_dict(CKPT)) == set(ck.tensors), "load_state_dict keys")

# --- hostile files --------------------------------------------------------------------------------------

data = open(CKPT, "rb").read()
(msize,) = struct.unpack("<Q", data[8:16])
manifest = data[16:16 + msize]
payload = data[16 + msize + 4:]
corpus = os.path.join(SCRATCH, "corpus")
os.makedirs(corpus, exist_ok=True)
verdicts = []


def verdict(name, blob, must_fail, what):
    """Loads `blob` as a file; it must raise CheckpointError naming the file (or load, when allowed)."""
    path = os.path.join(corpus, name)
    with open(path, "wb") as f:
        f.write(blob)
    try:
        mc.load(path, optimizer=True, backend="numpy")
        verdicts.append("%s ok" % name)
        check(not must_fail, "%s loads (%s)" % (name, what))
    except mc.CheckpointError as e:
        verdicts.append("%s error" % name)
        check(path in str(e), "%s: the error does not name the file: %s" % (name, e))
    except Exception as e:  # noqa: BLE001 - any other exception is the failure looked for
        check(False, "%s (%s) raised %s: %s" % (name, what, type(e).__name__, e))


def file_with(man):
    return data[:8] + struct.pack("<Q", len(man)) + man + struct.pack("<I", mc.crc32c(man)) + payload


# Every byte of the header and the manifest checksum changed, 400 bytes spread over the manifest, the
# first and last byte of tensors and bytes spread over the payload: each is covered by a check.
rng = random.Random(15)
head = 16 + msize + 4
spots = list(range(16)) + list(range(head - 4, head)) + sorted(rng.sample(range(16, head - 4), min(400, msize)))
for e in mc._parse("Manifest", manifest, 0, len(manifest))["model"][:12]:
    spots += [head + e["offset"], head + e["offset"] + e["nbytes"] - 1]
spots += rng.sample(range(head, len(data)), 40)
for i, pos in enumerate(spots):
    b = bytearray(data)
    b[pos] ^= 1 << (i % 8)
    path = os.path.join(corpus, "flip")
    with open(path, "wb") as f:
        f.write(b)
    try:
        mc.load(path, optimizer=True, backend="numpy")
        check(False, "a changed byte at %d loads" % pos)
    except mc.CheckpointError as e:
        check(path in str(e), "flip at %d: the error does not name the file: %s" % (pos, e))
    except Exception as e:  # noqa: BLE001
        check(False, "flip at %d raised %s: %s" % (pos, type(e).__name__, e))
for n in sorted({0, 1, 7, 8, 9, 15, 16, 17, 16 + msize // 2, head - 1, head, head + 1, len(data) // 2,
                 len(data) - 1}):
    verdict("truncated-%d" % n, data[:n], True, "the first %d bytes" % n)
verdict("appended", data + b"\0", True, "a byte appended")
verdict("bad-magic", b"MOCKPT02" + data[8:], True, "another magic")
verdict("huge-manifest", data[:8] + struct.pack("<Q", 1 << 40) + data[16:], True, "a 2^40-byte manifest")


# A manifest encoder (the reader's schema) for well-formed manifests with bad values.
def varint(v):
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        out.append((v & 0x7F) | (0x80 if v > 0x7F else 0))
        v >>= 7
        if not v:
            return bytes(out)


def encode(name, msg):
    """proto3 as the C++ writer emits it: default scalars left out, repeated numbers packed, the sampler
    message always present."""
    out = bytearray()
    for num, (key, kind, repeated) in sorted(mc._SCHEMA[name].items()):
        v = msg.get(key)
        if kind in mc._SCHEMA:
            for sub in (v if repeated else [v]):
                body = encode(kind, sub)
                out += varint(num << 3 | 2) + varint(len(body)) + body
        elif repeated and kind != "string":
            body = b"".join(varint(int(x)) for x in v)
            if body:
                out += varint(num << 3 | 2) + varint(len(body)) + body
        else:
            for x in (v if repeated else [v]):
                if not repeated and (x in ("", b"", 0, False) and not (kind == "double" and math.copysign(1, x) < 0)):
                    continue
                if kind == "string":
                    body = x.encode() if isinstance(x, str) else x
                    out += varint(num << 3 | 2) + varint(len(body)) + body
                elif kind == "double":
                    out += varint(num << 3 | 1) + struct.pack("<d", x)
                else:
                    out += varint(num << 3) + varint(int(x))
    return bytes(out)


base = mc._parse("Manifest", manifest, 0, len(manifest))
check(encode("Manifest", base) == manifest, "the test's encoder does not reproduce the manifest")
verdict("reencoded", file_with(encode("Manifest", base)), False, "the manifest re-encoded")


def edited(label, edit):
    m = json.loads(json.dumps(base))
    edit(m)
    verdict("bad-" + label, file_with(encode("Manifest", m)), True, label)


def t0(m):
    return m["model"][0]


edited("version", lambda m: m.update(format_version=2))
edited("payload-bytes", lambda m: m.update(payload_bytes=m["payload_bytes"] + 4))
edited("dtype", lambda m: t0(m).update(dtype="float16"))
edited("dims-9", lambda m: t0(m).update(shape=[1] * 9, nbytes=4))
edited("dim-negative", lambda m: t0(m).update(shape=[-1] + t0(m)["shape"]))
edited("dim-huge", lambda m: t0(m).update(shape=[1 << 40, 1 << 40, 1 << 40], nbytes=0))
edited("nbytes", lambda m: t0(m).update(nbytes=t0(m)["nbytes"] + 4))
edited("offset", lambda m: t0(m).update(offset=m["payload_bytes"]))
edited("offset-wraps", lambda m: t0(m).update(offset=(1 << 64) - 4))
edited("duplicate", lambda m: m["model"].append(dict(t0(m))))
edited("checksum", lambda m: t0(m).update(crc32c=t0(m)["crc32c"] ^ 1))
edited("epoch-past-step", lambda m: m.update(epoch=m["step"] + 1))
edited("step-huge", lambda m: m.update(step=1 << 41))
edited("step-negative", lambda m: m.update(step=-1))
edited("world-size", lambda m: m["sampler"].update(world_size=0))
edited("metric-nan", lambda m: m.update(has_metric=True, metric=math.nan))
edited("metric-101", lambda m: m.update(has_metric=True, metric=101.0))
edited("best-metric-inf", lambda m: m.update(best_metric=math.inf))
edited("loss-sum-nan", lambda m: m.update(epoch_loss_sum=math.nan))
edited("grad-norm-sum-negative", lambda m: m.update(epoch_grad_norm_sum=-1.0))
edited("loss-count-negative", lambda m: m.update(epoch_loss_count=-1))
edited("ema-outside", lambda m: m["ema"].append(dict(t0(m), offset=m["payload_bytes"])))
edited("ema-overlaps", lambda m: m["ema"].append(dict(t0(m), name="extra")))
edited("name-utf8", lambda m: t0(m).update(name=b"\xff\xfe"))
for label, tail in [("varint-11", varint(4 << 3) + b"\xff" * 10 + b"\x01"), ("length-past-end", b"\x12\x7f"),
                    ("field-0", b"\x00\x01"), ("end-group", b"\x0c"), ("group-open", b"\x9b\x01\x08\x01"),
                    ("wire-6", b"\x0e"), ("fixed-past-end", b"\x69\x00\x00"), ("tag-33-bits", varint(1 << 33) + b"\x00")]:
    verdict("bad-" + label, file_with(manifest + tail), True, label)
# Unknown fields (a group too) are skipped; a repeated scalar may come unpacked.
verdict("unknown-fields", file_with(manifest + varint(99 << 3) + varint(5) + b"\x9b\x01\x08\x01\x9c\x01"), False,
        "unknown fields")

# Random edits of the manifest with a valid checksum: load or CheckpointError, whatever they break.
for i in range(300):
    m = bytearray(manifest)
    for _ in range(rng.randint(1, 4)):
        op, at = rng.randrange(4), rng.randrange(len(m) + 1)
        if op == 0 and at < len(m):
            m[at] = rng.randrange(256)
        elif op == 1:
            m[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 12)))
        elif op == 2:
            del m[at:at + rng.randint(1, 40)]
        else:
            m[at:at] = m[at:at + rng.randint(1, 40)]
    verdict("mutant-%03d" % i, file_with(bytes(m)), False, "a random edit of the manifest")

# Not regular files, and the command line.
fifo = os.path.join(SCRATCH, "fifo.mo")
os.mkfifo(fifo)
for path, what in [(fifo, "named pipe"), (SCRATCH, "directory"), (os.path.join(SCRATCH, "missing.mo"), "cannot open")]:
    try:
        mc.load(path)
        check(False, "%s loads" % path)
    except mc.CheckpointError as e:
        check(path in str(e) and what in str(e), "%s: %s" % (path, e))
cli = subprocess.run([sys.executable, os.path.join(sys.argv[1], "mo_checkpoint.py"), os.path.join(corpus, "bad-dtype")],
                     capture_output=True, text=True, timeout=300)
check(cli.returncode == 1 and "mo_checkpoint: error: checkpoint '%s'" % os.path.join(corpus, "bad-dtype") in cli.stderr,
      "command line on a corrupt file: %d %s" % (cli.returncode, cli.stderr))
cli = subprocess.run([sys.executable, os.path.join(sys.argv[1], "mo_checkpoint.py"), CKPT], capture_output=True,
                     text=True, timeout=300)
check(cli.returncode == 0 and "%s: %s, epoch" % (CKPT, exp["model_name"]) in cli.stdout, "command line: " + cli.stdout[:300])

with open(os.path.join(SCRATCH, "verdicts.txt"), "w") as f:
    f.write("\n".join(verdicts) + "\n")
print("%d failures; %d files judged, %d of them loaded" % (len(failures), len(verdicts),
                                                           sum(v.endswith(" ok") for v in verdicts)))
sys.exit(1 if failures else 0)
