"""mambaout_ref.py: a PyTorch reference of MambaOut with the official module layout and parameter names
(yuweihao/MambaOut models/mambaout.py, as summarised in shared/spec/mambaout.md §1 and §2.1), used by the
checkpoint-conversion tests (tests/io). Also holds timm's checkpoint_filter_fn key mapping (§2.2), written
independently of the C++ one so the tests can cross-check them.

Official variants only (stem with mid LN, conv->LN downsampling, MLP head with the LN after GELU).
"""
import re
from functools import partial

import torch
import torch.nn as nn

LN = partial(nn.LayerNorm, eps=1e-6)


class StemLayer(nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels // 2, kernel_size=3, stride=2, padding=1)
        self.norm1 = LN(out_channels // 2)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(out_channels // 2, out_channels, kernel_size=3, stride=2, padding=1)
        self.norm2 = LN(out_channels)

    def forward(self, x):  # (B, 3, H, W) -> (B, H/4, W/4, C)
        x = self.conv1(x)
        x = self.norm1(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        x = self.conv2(self.act(x))
        return self.norm2(x.permute(0, 2, 3, 1))


class DownsampleLayer(nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1)
        self.norm = LN(out_channels)

    def forward(self, x):  # (B, H, W, C) -> (B, H/2, W/2, C')
        return self.norm(self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


class GatedCNNBlock(nn.Module):
    def __init__(self, dim, expansion_ratio=8 / 3, kernel_size=7, conv_ratio=1.0):
        super().__init__()
        self.norm = LN(dim)
        hidden = int(expansion_ratio * dim)
        self.fc1 = nn.Linear(dim, hidden * 2)
        self.act = nn.GELU()
        conv_channels = int(conv_ratio * dim)
        self.split_indices = (hidden, hidden - conv_channels, conv_channels)
        self.conv = nn.Conv2d(conv_channels, conv_channels, kernel_size=kernel_size, padding=kernel_size // 2,
                              groups=conv_channels)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):  # (B, H, W, C)
        shortcut = x
        g, i, c = torch.split(self.fc1(self.norm(x)), self.split_indices, dim=-1)
        c = self.conv(c.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.fc2(self.act(g) * torch.cat((i, c), dim=-1)) + shortcut


class MlpHead(nn.Module):
    def __init__(self, dim, num_classes, mlp_ratio=4):
        super().__init__()
        hidden = int(mlp_ratio * dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.norm = LN(hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x):
        return self.fc2(self.norm(self.act(self.fc1(x))))


class MambaOut(nn.Module):
    def __init__(self, depths=(3, 3, 9, 3), dims=(48, 96, 192, 288), num_classes=1000):
        super().__init__()
        down = [3] + list(dims)
        self.downsample_layers = nn.ModuleList(
            [StemLayer(down[0], down[1])] + [DownsampleLayer(down[i], down[i + 1]) for i in range(1, len(dims))])
        self.stages = nn.ModuleList([nn.Sequential(*[GatedCNNBlock(d) for _ in range(n)]) for n, d in zip(depths, dims)])
        self.norm = LN(dims[-1])
        self.head = MlpHead(dims[-1], num_classes)

    def forward(self, x):
        for ds, st in zip(self.downsample_layers, self.stages):
            x = st(ds(x))
        return self.head(self.norm(x.mean([1, 2])))


VARIANTS = {
    "mambaout_femto": ((3, 3, 9, 3), (48, 96, 192, 288)),
    "mambaout_kobe": ((3, 3, 15, 3), (48, 96, 192, 288)),
    "mambaout_tiny": ((3, 3, 9, 3), (96, 192, 384, 576)),
    "mambaout_small": ((3, 4, 27, 3), (96, 192, 384, 576)),
    "mambaout_base": ((3, 4, 27, 3), (128, 256, 512, 768)),
}


def official_to_timm(state_dict):
    """timm's checkpoint_filter_fn for MambaOut (mambaout.md §2.2), rules applied in order."""
    if "stem.conv1.weight" in state_dict:
        return state_dict
    out = {}
    for k, v in state_dict.items():
        k = k.replace("downsample_layers.0.", "stem.")
        k = re.sub(r"stages\.([0-9]+)\.([0-9]+)\.", r"stages.\1.blocks.\2.", k)
        k = re.sub(r"downsample_layers\.([0-9]+)\.", r"stages.\1.downsample.", k)
        if k.startswith("norm."):
            k = "head." + k          # the final LN lives in timm's head
        elif k.startswith("head.norm."):
            k = k.replace("head.norm.", "head.pre_logits.norm.")
        k = k.replace("head.fc1.", "head.pre_logits.fc.").replace("head.fc2.", "head.fc.")
        out[k] = v
    return out


def timm_to_official(state_dict):
    out = {}
    for k, v in state_dict.items():
        if k.startswith("head.norm."):
            k = k[len("head."):]
        k = k.replace("head.pre_logits.norm.", "head.norm.").replace("head.pre_logits.fc.", "head.fc1.")
        k = k.replace("head.fc.", "head.fc2.").replace("stem.", "downsample_layers.0.")
        k = re.sub(r"stages\.([0-9]+)\.downsample\.", r"downsample_layers.\1.", k)
        k = re.sub(r"stages\.([0-9]+)\.blocks\.([0-9]+)\.", r"stages.\1.\2.", k)
        out[k] = v
    return out
