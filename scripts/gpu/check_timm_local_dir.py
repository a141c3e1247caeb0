"""check_timm_local_dir.py: checks that a folder written by `mo_convert CKPT --hf-dir OUT/` is a timm model:
`timm.create_model('local-dir:OUT', pretrained=True)` must build the architecture with mo's number of
classes and class names, and, with timm's own eval transform from the folder's pretrained_cfg, give every
image the same top-1 as `mo_predict` and probabilities within --prob-tol. Needs timm (the GPU machine has
it); exit 0 when everything agrees, 1 on any mismatch or when mo_convert/mo_predict fail, 2 on a usage
error, 3 when timm (or torch, pillow) is not installed, so nothing was checked.
  python3 scripts/gpu/check_timm_local_dir.py --bin build-gpu/tools --ckpt best.mo IMAGE_OR_DIR ...
"""
import argparse
import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile

p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
p.add_argument("--bin", required=True, help="the folder holding mo_convert and mo_predict")
p.add_argument("--ckpt", required=True, help="a checkpoint mo reads (.mo, .pth, .safetensors)")
p.add_argument("images", nargs="+", help="images, or folders of them (recursively)")
p.add_argument("--max-images", type=int, default=64, help="at most this many, evenly spaced in sorted order")
p.add_argument("--mo-device", default="cpu", choices=["cpu", "cuda"], help="where mo_predict runs (fp32)")
p.add_argument("--prob-tol", type=float, default=5e-3, help="largest |p_mo - p_timm| allowed per class")
p.add_argument("--out", help="the --hf-dir folder to write (default: a temporary one)")
a = p.parse_args()
tools = {t: os.path.join(a.bin, t) for t in ("mo_convert", "mo_predict")}
for t, path in tools.items():
    if not os.access(path, os.X_OK):
        p.error(f"--bin {a.bin}: no executable {t} there")
if not os.path.isfile(a.ckpt):
    p.error(f"--ckpt {a.ckpt}: no such file")
EXT = (".jpg", ".jpeg", ".png", ".webp")
files = []
for path in a.images:
    if os.path.isdir(path):
        for d, _, names in sorted(os.walk(path)):
            files += [os.path.join(d, n) for n in sorted(names) if n.lower().endswith(EXT)]
    elif os.path.isfile(path):
        files.append(path)
    else:
        p.error(f"{path}: no such image or folder")
files = files[::max(1, -(-len(files) // a.max_images))]  # spread over the folders (classes)
if not files:
    p.error("no images (.jpg, .jpeg, .png, .webp) in " + " ".join(a.images))

try:
    import timm
    import timm.data
    import torch
    from PIL import Image
except ImportError as e:
    print(f"check_timm_local_dir.py: needs timm, torch and pillow ({e}): nothing checked", file=sys.stderr)
    sys.exit(3)

if a.out:
    out = a.out
else:  # a temporary folder, removed at exit
    tmp = tempfile.mkdtemp(prefix="mo_hf_")
    atexit.register(shutil.rmtree, tmp, True)
    out = os.path.join(tmp, "hf")
r = subprocess.run([tools["mo_convert"], a.ckpt, "--hf-dir", out], capture_output=True, text=True)
if r.returncode != 0:
    sys.exit(f"check_timm_local_dir.py: mo_convert --hf-dir failed (rc {r.returncode}):\n{r.stderr}")
cfg = json.load(open(os.path.join(out, "config.json")))
r = subprocess.run([tools["mo_predict"], "-w", a.ckpt, "--device", a.mo_device, "--json", "--logits", "--topk", "5",
                    *files], capture_output=True, text=True)
if r.returncode != 0:
    sys.exit(f"check_timm_local_dir.py: mo_predict failed (rc {r.returncode}):\n{r.stderr}")
mo = json.loads(r.stdout)

model = timm.create_model("local-dir:" + out, pretrained=True).eval()
data_cfg = timm.data.resolve_data_config({}, model=model)
transform = timm.data.create_transform(**data_cfg)
names = list(getattr(model, "pretrained_cfg", {}).get("label_names") or cfg.get("label_names") or [])
problems = []
print(f"timm {timm.__version__}: local-dir:{out} -> {type(model).__name__} {cfg.get('architecture')}, "
      f"{model.num_classes} classes; transform {data_cfg}")
print(f"mo_predict: {mo['model']}, {mo['num_classes']} classes, preprocess {mo['preprocess']}")
if model.num_classes != mo["num_classes"]:
    problems.append(f"timm built {model.num_classes} classes, mo has {mo['num_classes']}")
if "label_names" in cfg and names != cfg["label_names"]:
    problems.append(f"timm's pretrained_cfg label_names {names[:5]}... differ from config.json's")
worst_p, worst_logit = 0.0, 0.0
with torch.no_grad():
    for img in mo["images"]:
        x = transform(Image.open(img["path"]).convert("RGB")).unsqueeze(0)
        logits = model(x)[0]
        prob = torch.softmax(logits, 0)
        ml = torch.tensor(img["logits"])
        mp = torch.softmax(ml, 0)
        dp = (prob - mp).abs().max().item()
        dl = (logits - ml).abs().max().item()
        worst_p, worst_logit = max(worst_p, dp), max(worst_logit, dl)
        t1, m1 = int(prob.argmax()), img["top"][0]["index"]
        if t1 != m1:
            problems.append(f"{img['path']}: timm top-1 {t1} ({names[t1] if names else ''}), mo {m1} "
                            f"({img['top'][0]['name']})")
        elif names and names[t1] != img["top"][0]["name"]:
            problems.append(f"{img['path']}: class {t1} is '{names[t1]}' in timm, '{img['top'][0]['name']}' in mo")
        if dp > a.prob_tol:
            problems.append(f"{img['path']}: probabilities differ by {dp:.4g} (> --prob-tol {a.prob_tol})")
print(f"{len(mo['images'])} images: largest |p_timm - p_mo| {worst_p:.3g}, largest |logit difference| {worst_logit:.3g}")
for q in problems:
    print("MISMATCH: " + q)
print("timm local-dir check: " + ("FAILED" if problems else "OK, timm predicts what mo predicts"))
sys.exit(1 if problems else 0)
