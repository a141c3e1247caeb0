"""serve_peer_timm.py: the plain PyTorch/timm baseline for the serving benchmark (scripts/bench/serve_bench.py):
Python's ThreadingHTTPServer, one thread per connection, each request decoded with PIL and classified by
its own model(x) call (batch 1, no batching), on the endpoint mo_serve has: POST /predict with the raw image
bytes (or multipart/form-data with a field "image") answers {"model", "ms", "preprocess", "top5": [{"index",
"name", "prob"}, ...]}; bad input 400 {"error"}, a body over --max-body-mb 413; GET /health.
Preprocessing is timm's eval transform done with PIL (shorter side resized to floor(size / crop_pct), centre
crop, mean/std); pass mo_serve's values (its GET /health "preprocess") to serve both the same way.
The model is timm's; where timm is not installed, --allow-reference serves the project's PyTorch reference
MambaOut (tests/reference/mambaout_ref.py) instead, labelled as such: that tests the plumbing only.
  python3 serve_peer_timm.py --model mambaout_tiny --save-weights W.pth     (random init, seed 0, then exit)
  python3 serve_peer_timm.py --model mambaout_tiny --weights W.pth --device cuda [--port 0]
"""
import argparse
import email.parser
import email.policy
import http.server
import io
import json
import math
import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")

p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
p.add_argument("--model", default="mambaout_tiny")
p.add_argument("--weights", help="a state dict (.pth) to load strictly; default: random init (seed 0)")
p.add_argument("--save-weights", metavar="FILE", help="write the random-init state dict to FILE and exit")
p.add_argument("--num-classes", type=int, default=1000)
p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto (a GPU when torch sees one), cpu or cuda")
p.add_argument("--dtype", choices=["fp32", "bf16"], help="default: bf16 on a GPU (autocast), fp32 on the CPU")
p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
p.add_argument("--img-size", type=int, default=224)
p.add_argument("--crop-pct", type=float, default=0.875)
p.add_argument("--interpolation", choices=["bicubic", "bilinear"], default="bicubic")
p.add_argument("--mean", type=float, nargs=3, default=[0.485, 0.456, 0.406])
p.add_argument("--std", type=float, nargs=3, default=[0.229, 0.224, 0.225])
p.add_argument("--host", default="127.0.0.1")
p.add_argument("--port", type=int, default=8081, help="0: any free port (printed)")
p.add_argument("--max-body-mb", type=float, default=20)
p.add_argument("--allow-reference", action="store_true",
               help="without timm, serve tests/reference/mambaout_ref.py (a plumbing test, not the timm peer)")
a = p.parse_args()
if not 32 <= a.img_size <= 8192 or not 0 < a.crop_pct <= 1 or not 0 <= a.port <= 65535 or a.max_body_mb <= 0:
    p.error("--img-size 32..8192, --crop-pct in (0, 1], --port 0..65535 and a positive --max-body-mb, please")
if a.weights and not os.path.isfile(a.weights):
    p.error(f"--weights {a.weights}: no such file")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

if a.threads:
    torch.set_num_threads(a.threads)
torch.manual_seed(0)
try:
    import timm
    model = timm.create_model(a.model, num_classes=a.num_classes)
    peer = f"timm {timm.__version__} eager, torch {torch.__version__}"
except ImportError:
    if not a.allow_reference:
        sys.exit("serve_peer_timm.py: timm is not installed (pip install timm), "
                 "or pass --allow-reference for a plumbing test with the reference model")
    sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
    from mambaout_ref import MambaOut, VARIANTS
    if a.model not in VARIANTS:
        p.error(f"--model {a.model}: the reference knows {', '.join(VARIANTS)}")
    model = MambaOut(*VARIANTS[a.model], num_classes=a.num_classes)
    peer = f"PLUMBING TEST ONLY: reference MambaOut (no timm), torch {torch.__version__} eager"
if a.save_weights:
    torch.save(model.state_dict(), a.save_weights)
    print(f"serve_peer_timm: wrote the random-init {a.model} to {a.save_weights} ({peer})")
    sys.exit(0)
if a.weights:
    sd = torch.load(a.weights, map_location="cpu")
    try:
        model.load_state_dict(sd.get("state_dict", sd) if isinstance(sd, dict) else sd, strict=True)
    except RuntimeError as e:
        sys.exit(f"serve_peer_timm.py: --weights {a.weights} does not fit {a.model}: {e}")
dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device)
if dev.type == "cuda" and not torch.cuda.is_available():
    sys.exit("serve_peer_timm.py: --device cuda but torch sees no GPU (use --device cpu)")
dtype = a.dtype or ("bf16" if dev.type == "cuda" else "fp32")
model = model.to(dev).eval()
names_file = os.path.join(ROOT, "tools", "common", "imagenet_classes.txt")
names = open(names_file).read().split("\n")[:1000] if a.num_classes == 1000 and os.path.isfile(names_file) else []
mean = torch.tensor(a.mean).view(3, 1, 1)
std = torch.tensor(a.std).view(3, 1, 1)
RESAMPLE = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}[a.interpolation]
PRE = {"img_size": a.img_size, "crop_pct": a.crop_pct, "interpolation": a.interpolation, "mean": a.mean,
       "std": a.std}
started = time.monotonic()
served = [0]
served_mu = threading.Lock()


def preprocess(data):
    """timm's eval transform: Resize(shorter side = floor(size / crop_pct)), CenterCrop(size), normalise."""
    img = Image.open(io.BytesIO(data)).convert("RGB")
    s = a.img_size
    scale = math.floor(s / a.crop_pct)
    w, h = img.size
    nw, nh = (scale, max(1, int(scale * h / w))) if w <= h else (max(1, int(scale * w / h)), scale)
    img = img.resize((nw, nh), RESAMPLE)
    left, top = int(round((nw - s) / 2.0)), int(round((nh - s) / 2.0))
    img = img.crop((left, top, left + s, top + s))
    x = torch.from_numpy(np.asarray(img, dtype=np.float32).copy()).permute(2, 0, 1) / 255.0
    return ((x - mean) / std).unsqueeze(0)


def classify(x):
    x = x.to(dev, non_blocking=True)
    with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dtype == "bf16"):
        logits = model(x)
    return torch.softmax(logits.float(), dim=1)[0].cpu()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as serve_bench's clients expect
    disable_nagle_algorithm = True  # TCP_NODELAY, as mo_serve: no 40 ms wait for the client's delayed ACK

    def log_message(self, fmt, *args):  # no line per request
        pass

    def answer(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if status != 200:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self):
        if self.path != "/health":
            return self.answer(404, {"error": f"no such page: {self.path} (POST /predict, GET /health)"})
        with served_mu:
            n = served[0]
        self.answer(200, {"model": a.model, "classes": a.num_classes, "device": str(dev), "precision": dtype,
                          "uptime_s": round(time.monotonic() - started, 3), "requests": n, "preprocess": PRE,
                          "peer": peer})

    do_HEAD = do_GET

    def do_POST(self):
        if self.path != "/predict":
            return self.answer(404, {"error": f"no such page: {self.path}"})
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            return self.answer(411, {"error": "send a Content-Length (digits only)"})
        if int(length) > a.max_body_mb * 2**20:
            return self.answer(413, {"error": f"the body is over {a.max_body_mb} MiB"})
        body = self.rfile.read(int(length))
        ctype = self.headers.get("Content-Type", "")
        if ctype.startswith("multipart/form-data"):
            msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body)
            parts = [q for q in msg.iter_parts() if q.get_param("name", header="content-disposition") == "image"] \
                if msg.is_multipart() else []
            if not parts:
                return self.answer(400, {"error": "the multipart body has no field 'image'"})
            body = parts[0].get_payload(decode=True) or b""
        if not body:
            return self.answer(400, {"error": "empty upload: send the image bytes"})
        t0 = time.perf_counter()
        try:
            x = preprocess(body)
        except Exception as e:  # PIL raises several kinds on hostile files; none is the server's fault
            return self.answer(400, {"error": f"cannot decode the upload as an image: {e!r}"})
        try:
            prob = classify(x)
        except RuntimeError as e:
            return self.answer(500, {"error": f"the model failed: {e}"})
        top = torch.topk(prob, min(5, prob.numel()))
        ms = (time.perf_counter() - t0) * 1e3
        with served_mu:
            served[0] += 1
        self.answer(200, {"model": a.model, "ms": round(ms, 3), "preprocess": PRE, "top5": [
            {"index": int(i), "name": names[int(i)] if names else f"class {int(i)}", "prob": float(v)}
            for v, i in zip(top.values, top.indices)]})


class Server(http.server.ThreadingHTTPServer):
    request_queue_size = 1024  # 128 clients connecting at once are not dropped by the listen backlog
    daemon_threads = True


srv = Server((a.host, a.port), Handler)
print(f"serve_peer_timm: {a.model} on {dev}, {dtype}; {peer}", flush=True)
print(f"serve_peer_timm: preprocessing {json.dumps(PRE)}", flush=True)
print(f"serve_peer_timm: listening on http://{a.host}:{srv.server_address[1]}/", flush=True)
try:
    srv.serve_forever()
except KeyboardInterrupt:
    pass
