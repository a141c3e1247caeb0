"""mambaout_ref.py: a small PyTorch reference of MambaOut (official module layout and state_dict
names, written from ../shared/spec/mambaout.md) and the parity driver used by the C++ tests.

  python3 mambaout_ref.py model DIR   # DIR holds config.txt, input.npy, target.npy and one .npy per
                                      # parameter (named like the state_dict key); writes logits.npy,
                                      # loss.npy and grad/<key>.npy
  python3 mambaout_ref.py block DIR   # one GatedCNNBlock (DIR/config.txt: dim), same files
(the single ops are tests/reference/op_ref.py, driven by the op table)
Runs on Debian's python3-torch (CPU PyTorch 1.13).
"""
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class LayerNormCL(nn.LayerNorm):
    def __init__(self, dim):
        super().__init__(dim, eps=1e-6)


class StemLayer(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout // 2, 3, 2, 1)
        self.norm1 = LayerNormCL(cout // 2)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(cout // 2, cout, 3, 2, 1)
        self.norm2 = LayerNormCL(cout)

    def forward(self, x):  # NCHW in, NHWC out
        x = self.conv1(x)
        x = self.norm1(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        x = self.act(x)
        x = self.conv2(x)
        return self.norm2(x.permute(0, 2, 3, 1))


class DownsampleLayer(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, 2, 1)
        self.norm = LayerNormCL(cout)

    def forward(self, x):  # NHWC
        x = self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.norm(x)


class GatedCNNBlock(nn.Module):
    def __init__(self, dim, expansion_ratio=8 / 3, kernel_size=7, conv_ratio=1.0, drop_path=0.0):
        super().__init__()
        self.norm = LayerNormCL(dim)
        hidden = int(expansion_ratio * dim)
        self.fc1 = nn.Linear(dim, hidden * 2)
        self.act = nn.GELU()
        conv_channels = int(conv_ratio * dim)
        self.split_indices = (hidden, hidden - conv_channels, conv_channels)
        self.conv = nn.Conv2d(conv_channels, conv_channels, kernel_size, padding=kernel_size // 2, groups=conv_channels)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop_path = drop_path

    def forward(self, x):
        shortcut = x
        x = self.norm(x)
        g, i, c = torch.split(self.fc1(x), self.split_indices, dim=-1)
        c = c.permute(0, 3, 1, 2)
        c = self.conv(c)
        c = c.permute(0, 2, 3, 1)
        x = self.fc2(self.act(g) * torch.cat((i, c), dim=-1))
        return x + shortcut


class MlpHead(nn.Module):
    def __init__(self, dim, num_classes=1000, mlp_ratio=4):
        super().__init__()
        hidden = int(mlp_ratio * dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.norm = nn.LayerNorm(hidden, eps=1e-6)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x):
        return self.fc2(self.norm(self.act(self.fc1(x))))


class MambaOut(nn.Module):
    def __init__(self, depths, dims, num_classes=1000):
        super().__init__()
        self.downsample_layers = nn.ModuleList(
            [StemLayer(3, dims[0])] + [DownsampleLayer(dims[i], dims[i + 1]) for i in range(3)])
        self.stages = nn.ModuleList([nn.Sequential(*[GatedCNNBlock(dims[i]) for _ in range(depths[i])]) for i in range(4)])
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = MlpHead(dims[-1], num_classes)

    def forward(self, x):
        for i in range(4):
            x = self.downsample_layers[i](x)
            x = self.stages[i](x)
        return self.head(self.norm(x.mean([1, 2])))


VARIANTS = {
    "mambaout_femto": ([3, 3, 9, 3], [48, 96, 192, 288]),
    "mambaout_kobe": ([3, 3, 15, 3], [48, 96, 192, 288]),
    "mambaout_tiny": ([3, 3, 9, 3], [96, 192, 384, 576]),
    "mambaout_small": ([3, 4, 27, 3], [96, 192, 384, 576]),
    "mambaout_base": ([3, 4, 27, 3], [128, 256, 512, 768]),
}


def read_config(d):
    cfg = {}
    with open(os.path.join(d, "config.txt")) as f:
        for line in f:
            k, v = line.split("=", 1)
            cfg[k.strip()] = v.strip()
    return cfg


def load(d, name):
    return torch.from_numpy(np.load(os.path.join(d, name + ".npy")))


def soft_target_ce(logits, target):
    return torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()


def run_module(model, d, x):
    sd = {k: load(d, k) for k in model.state_dict().keys()}
    model.load_state_dict(sd, strict=True)
    x.requires_grad_(False)
    out = model(x)
    os.makedirs(os.path.join(d, "grad"), exist_ok=True)
    if out.dim() == 2:
        target = load(d, "target")
        loss = soft_target_ce(out, target)
        loss.backward()
        np.save(os.path.join(d, "loss.npy"), loss.detach().numpy().reshape(1))
    else:
        out.backward(load(d, "upstream"))
    np.save(os.path.join(d, "logits.npy"), out.detach().numpy())
    for k, p in model.named_parameters():
        np.save(os.path.join(d, "grad", k + ".npy"), p.grad.numpy())


def main():
    mode, d = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    cfg = read_config(d)
    if mode == "model":
        depths, dims = VARIANTS[cfg["arch"]]
        model = MambaOut(depths, dims, int(cfg.get("num_classes", "1000")))
    elif mode == "block":
        model = GatedCNNBlock(int(cfg["dim"]))
    else:
        raise SystemExit("unknown mode " + mode)
    run_module(model, d, load(d, "input"))


if __name__ == "__main__":
    main()
