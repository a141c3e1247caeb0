"""torch_io.py: the PyTorch side of the checkpoint-conversion tests (tests/nn/io/test_io_*.cpp call it through
MO_PYTHON, Debian's /usr/bin/python3 with torch 1.13). Sub-commands:

  fixtures DIR               torch.save files covering the reader's cases (dtypes, shared storages and views,
                             wrappers, module. prefix, timm train checkpoints, Parameters, legacy format,
                             deflated zip, a malicious os.system pickle); each CASE.pth comes with
                             CASE.expected.pth, the flat dict of tensors a reader must return.
  compare A B [A B ...]      same names, dtypes, shapes and bits (A, B: .pth via torch.load, .safetensors via
                             the safetensors package, or a strict stand-in reader when it is not installed).
  ref-save ...               builds the reference model (tests/reference/mambaout_ref.py) from a seed, saves its weights
                             (official or timm names, fp32/fp16/bf16), a random input and its logits (.bin f32).
  ref-logits ...             loads weights into the reference model with load_state_dict(strict=True)
                             (timm names are mapped first) and writes the logits for an input.
  safetensors-pkg FILE       reads FILE with the real safetensors package (exit 3 if it is not installed).
"""
import argparse
import collections
import json
import os
import struct
import sys
import zipfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "reference"))
import mambaout_ref  # noqa: E402  (the project's PyTorch reference model, official names)
from timm_names import official_to_timm, timm_to_official  # noqa: E402

ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
             "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
             "BOOL": torch.bool}


def read_safetensors_strict(path):
    """Stand-in for safetensors.torch.load_file with the same validation (used only if it is missing)."""
    data = open(path, "rb").read()
    (n,) = struct.unpack("<Q", data[:8])
    assert n % 8 == 0, "header length %d is not a multiple of 8" % n
    header = json.loads(data[8:8 + n].decode("utf-8"))
    body = data[8 + n:]
    header.pop("__metadata__", None)
    out, at = {}, 0
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        b, e = info["data_offsets"]
        assert b == at, "gap or overlap before %s" % name
        dt = ST_DTYPES[info["dtype"]]
        t = torch.frombuffer(bytearray(body[b:e]), dtype=dt) if e > b else torch.empty(0, dtype=dt)
        out[name] = t.reshape(info["shape"])
        at = e
    assert at == len(body), "trailing bytes"
    return out


def load_any(path):
    if path.endswith(".safetensors"):
        try:
            from safetensors.torch import load_file
        except ImportError:
            return read_safetensors_strict(path)
        return load_file(path)
    obj = torch.load(path, map_location="cpu")
    if isinstance(obj, dict) and "state_dict" in obj and not torch.is_tensor(obj["state_dict"]):
        obj = obj["state_dict"]
    return obj


def bits_equal(a, b):
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.numel() == 0:
        return True
    view = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
    if a.dtype == torch.bool:
        return torch.equal(a, b)
    return torch.equal(a.contiguous().view(view), b.contiguous().view(view))


def compare_pair(pa, pb, same_order):
    a, b = load_any(pa), load_any(pb)
    problems = []
    if set(a) != set(b):
        problems.append("keys differ: only in A %s, only in B %s" % (sorted(set(a) - set(b))[:5],
                                                                      sorted(set(b) - set(a))[:5]))
    for k in a:
        if k in b and not bits_equal(a[k], b[k]):
            problems.append("%s: A %s %s vs B %s %s" % (k, a[k].dtype, tuple(a[k].shape), b[k].dtype,
                                                         tuple(b[k].shape)))
    if same_order and list(a) != list(b):
        problems.append("order differs")
    if problems:
        print("MISMATCH %s vs %s:\n  %s" % (pa, pb, "\n  ".join(problems[:10])))
        return False
    print("equal: %d tensors (%s, %s)" % (len(a), pa, pb))
    return True


def cmd_compare(args):
    if len(args.files) % 2:
        print("compare needs pairs of files")
        return 2
    ok = [compare_pair(args.files[i], args.files[i + 1], args.same_order) for i in range(0, len(args.files), 2)]
    return 0 if all(ok) else 1


def small_state_dict(seed=0, depths=(1, 1, 2, 1), dims=(16, 32, 48, 64), classes=10):
    torch.manual_seed(seed)
    net = mambaout_ref.MambaOut(depths, dims, classes)
    randomize_norms(net)
    return net.state_dict()


def randomize_norms(net):
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)


def save_case(d, name, obj, expected):
    torch.save(obj, os.path.join(d, name + ".pth"))
    torch.save(collections.OrderedDict((k, v.clone().contiguous()) for k, v in expected.items()),
               os.path.join(d, name + ".expected.pth"))


class Evil:
    def __reduce__(self):
        return (os.system, ("touch %s" % os.environ.get("MO_EVIL_MARKER", "/tmp/mo_evil_marker"),))


def cmd_fixtures(args):
    d = args.dir
    os.makedirs(d, exist_ok=True)
    sd = small_state_dict()
    save_case(d, "plain", sd, sd)
    save_case(d, "fp16", {k: v.half() for k, v in sd.items()}, {k: v.half() for k, v in sd.items()})
    save_case(d, "bf16", {k: v.bfloat16() for k, v in sd.items()}, {k: v.bfloat16() for k, v in sd.items()})
    mixed = collections.OrderedDict()
    base = torch.randn(7, 5)
    for name, dt in [("f32", torch.float32), ("f16", torch.float16), ("bf16", torch.bfloat16),
                     ("f64", torch.float64), ("i64", torch.int64), ("i32", torch.int32), ("i16", torch.int16),
                     ("i8", torch.int8), ("u8", torch.uint8), ("bool", torch.bool)]:
        mixed[name] = (base * 10).to(dt)
    mixed["scalar"] = torch.tensor(3.25)
    mixed["empty"] = torch.zeros(0, 4)
    mixed["num_batches_tracked"] = torch.tensor(12345678901, dtype=torch.int64)
    save_case(d, "mixed", mixed, mixed)
    # Shared storages and non-contiguous views (_rebuild_tensor_v2 with offset, size, stride).
    flat = torch.arange(60, dtype=torch.float32) * 0.5
    views = collections.OrderedDict([
        ("whole", flat), ("slice", flat[7:19]), ("transposed", flat.view(6, 10).t()),
        ("strided", flat.view(6, 10)[1:5, 2::3]), ("expanded", flat[3:6].unsqueeze(0).expand(4, 3)),
        ("perm3d", flat.view(3, 4, 5).permute(2, 0, 1)), ("scalar_view", flat[11]),
        ("half_view", flat.half().view(10, 6)[::2, 1:4]),
    ])
    save_case(d, "views", views, views)
    save_case(d, "module_prefix", collections.OrderedDict(("module." + k, v) for k, v in sd.items()), sd)
    save_case(d, "wrapped_model", {"model": sd}, sd)
    # A timm train.py checkpoint: epoch/arch/optimizer/args/amp_scaler entries around 'state_dict'.
    torch.manual_seed(1)
    net = mambaout_ref.MambaOut((1, 1, 2, 1), (16, 32, 48, 64), 10)
    opt = torch.optim.AdamW(net.parameters(), lr=4e-3)
    net(torch.randn(2, 3, 32, 32)).sum().backward()
    opt.step()
    ns = argparse.Namespace(model="mambaout_femto", lr=4e-3, drop_path=0.025, smoothing=0.1, mixup=0.8,
                            input_size=None, mean=(0.485, 0.456, 0.406), aa="rand-m9-mstd0.5-inc1",
                            sched="cosine", seed=42, amp=False, data_dir="/data/imagenet", epochs=300,
                            big=1 << 70, flags={"a", "b"}, blob=b"\x00\x01raw")
    train_sd = collections.OrderedDict(("module." + k, v) for k, v in net.state_dict().items())
    ckpt = {"epoch": 7, "arch": "mambaout_femto", "state_dict": train_sd, "optimizer": opt.state_dict(),
            "version": 2, "args": ns, "metric": 77.25,
            "amp_scaler": {"scale": 65536.0, "growth_factor": 2.0, "_growth_tracker": 3},
            "state_dict_ema": collections.OrderedDict((k, v * 0.5) for k, v in net.state_dict().items()),
            "device": torch.device("cpu"), "dtype": torch.float32, "np_metric": np.float64(1.5),
            "np_array": np.arange(6, dtype=np.float32).reshape(2, 3)}
    save_case(d, "timm_train", ckpt, net.state_dict())
    torch.save(ckpt["state_dict_ema"], os.path.join(d, "timm_train_ema.expected.pth"))
    timm_sd = official_to_timm(sd)
    save_case(d, "timm_names", timm_sd, timm_sd)
    params = collections.OrderedDict((k, torch.nn.Parameter(v)) for k, v in sd.items())
    save_case(d, "parameters", params, sd)
    torch.save(sd, os.path.join(d, "legacy.pth"), _use_new_zipfile_serialization=False)
    with zipfile.ZipFile(os.path.join(d, "plain.pth")) as src, \
            zipfile.ZipFile(os.path.join(d, "deflated.pth"), "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            dst.writestr(item.filename, src.read(item.filename))
    torch.save({"weight": torch.zeros(2), "payload": Evil()}, os.path.join(d, "malicious.pth"))
    try:  # a file written by the safetensors package itself, when it is installed
        from safetensors.torch import save_file
        save_file(mixed, os.path.join(d, "pkg.safetensors"), metadata={"format": "pt"})
        torch.save(mixed, os.path.join(d, "pkg.expected.pth"))
    except ImportError:
        pass
    print("fixtures written to", d)
    return 0


def build_ref(args):
    depths = tuple(int(x) for x in args.depths.split(","))
    dims = tuple(int(x) for x in args.dims.split(","))
    return mambaout_ref.MambaOut(depths, dims, args.classes)


def write_bin(path, t):
    t.detach().contiguous().float().numpy().tofile(path)


def cmd_ref_save(args):
    torch.manual_seed(args.seed)
    net = build_ref(args)
    randomize_norms(net)
    net.eval()
    x = torch.randn(args.batch, 3, args.res, args.res)
    with torch.no_grad():
        logits = net(x)
    sd = net.state_dict()
    if args.names == "timm":
        sd = official_to_timm(sd)
    sd = collections.OrderedDict((k, v.to(getattr(torch, args.dtype))) for k, v in sd.items())
    if args.wrap:
        torch.save({"epoch": 1, "arch": "test", "state_dict": sd, "optimizer": {"state": {}}}, args.out)
    else:
        torch.save(sd, args.out)
    write_bin(args.input, x)
    write_bin(args.logits, logits)
    return 0


def cmd_ref_logits(args):
    net = build_ref(args)
    net.eval()
    sd = load_any(args.weights)
    if args.names == "timm":
        expect = set(official_to_timm(net.state_dict()))
        if set(sd) != expect:
            print("timm names differ from timm's filter: only in file %s, only expected %s"
                  % (sorted(set(sd) - expect)[:5], sorted(expect - set(sd))[:5]))
            return 1
        sd = timm_to_official(sd)
    net.load_state_dict(sd, strict=True)
    x = torch.from_numpy(np.fromfile(args.input, dtype=np.float32)).reshape(args.batch, 3, args.res, args.res)
    with torch.no_grad():
        write_bin(args.logits, net(x))
    return 0


def cmd_safetensors_pkg(args):
    try:
        from safetensors import safe_open
    except ImportError:
        print("the safetensors package is not installed")
        return 3
    with safe_open(args.file, framework="pt") as f:
        meta = f.metadata()
        n = sum(1 for k in f.keys() if f.get_tensor(k) is not None)
    print("safetensors package read %d tensors, metadata %s" % (n, meta))
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("fixtures")
    s.add_argument("dir")
    s = sub.add_parser("compare")
    s.add_argument("files", nargs="+", help="A1 B1 [A2 B2 ...]")
    s.add_argument("--same-order", action="store_true")
    for name in ("ref-save", "ref-logits"):
        s = sub.add_parser(name)
        s.add_argument("--depths", default="3,3,9,3")
        s.add_argument("--dims", default="48,96,192,288")
        s.add_argument("--classes", type=int, default=1000)
        s.add_argument("--batch", type=int, default=2)
        s.add_argument("--res", type=int, default=64)
        s.add_argument("--names", choices=["official", "timm"], default="official")
        s.add_argument("--input", required=True)
        s.add_argument("--logits", required=True)
        if name == "ref-save":
            s.add_argument("--seed", type=int, default=0)
            s.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
            s.add_argument("--wrap", action="store_true", help="save as a train.py-style checkpoint")
            s.add_argument("--out", required=True)
        else:
            s.add_argument("--weights", required=True)
    s = sub.add_parser("safetensors-pkg")
    s.add_argument("file")
    args = p.parse_args()
    fn = {"fixtures": cmd_fixtures, "compare": cmd_compare, "ref-save": cmd_ref_save, "ref-logits": cmd_ref_logits,
          "safetensors-pkg": cmd_safetensors_pkg}[args.cmd]
    return fn(args)


if __name__ == "__main__":
    sys.exit(main())
