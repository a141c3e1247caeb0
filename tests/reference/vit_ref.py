"""vit_ref.py: PyTorch references for mo's attention op and ViT (timm's VisionTransformer, written out in
plain torch: timm is not needed) and the parity driver of tests/ops/test_attention.cpp and tests/nn/test_vit.cpp.

  python3 vit_ref.py attention DIR  # DIR: qkv.npy, dout.npy, config.txt (heads, causal); writes out.npy and
                                    # dqkv.npy from torch.nn.functional.scaled_dot_product_attention
                                    # (torch 1.13: _scaled_dot_product_attention)
  python3 vit_ref.py model DIR      # DIR: config.txt (embed_dim, depth, heads, patch, img, classes, causal),
                                    # input.npy, target.npy, one .npy per state_dict key; writes logits.npy,
                                    # loss.npy and grad/<key>.npy
Runs on Debian's python3-torch (CPU PyTorch 1.13).
"""
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def read_config(d):
    cfg = {}
    for line in open(os.path.join(d, "config.txt")):
        k, v = line.strip().split("=")
        cfg[k] = int(v)
    return cfg


def load(d, name):
    return torch.from_numpy(np.load(os.path.join(d, name + ".npy")))


def save(d, name, t):
    os.makedirs(os.path.dirname(os.path.join(d, name)), exist_ok=True)
    np.save(os.path.join(d, name + ".npy"), t.detach().numpy())


def sdpa_packed(qkv, heads, causal):
    """qkv (B, L, 3·H·D) -> (B, L, H·D), as timm's Attention does it."""
    B, L, C3 = qkv.shape
    D = C3 // (3 * heads)
    q, k, v = qkv.reshape(B, L, 3, heads, D).permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, L, D) each
    if hasattr(F, "scaled_dot_product_attention"):  # torch >= 2.0
        o = F.scaled_dot_product_attention(q, k, v, is_causal=bool(causal))
    else:  # torch 1.13 (Debian 12) ships it as _scaled_dot_product_attention, returning (out, weights)
        o = F._scaled_dot_product_attention(q, k, v, None, 0.0, False, bool(causal))[0]
    return o.transpose(1, 2).reshape(B, L, heads * D)


def attention(d):
    cfg = read_config(d)
    qkv = load(d, "qkv").requires_grad_()
    out = sdpa_packed(qkv, cfg["heads"], cfg["causal"])
    out.backward(load(d, "dout"))
    save(d, "out", out)
    save(d, "dqkv", qkv.grad)


class Attention(nn.Module):  # timm.models.vision_transformer.Attention (qkv_bias=True, no qk norm)
    def __init__(self, dim, heads, causal):
        super().__init__()
        self.heads, self.causal = heads, causal
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        return self.proj(sdpa_packed(self.qkv(x), self.heads, self.causal))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):  # timm's Block: pre-norm, no LayerScale, no drop path at eval
    def __init__(self, dim, heads, causal):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, causal)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, 4 * dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch, dim):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, N, C)


class VisionTransformer(nn.Module):
    """timm's VisionTransformer (class token, learned pos embed, global_pool='token'). causal=1: the causal
    mask in every block and the class token placed last (it then sees every patch; mo's choice)."""

    def __init__(self, img, patch, dim, depth, heads, classes, causal):
        super().__init__()
        self.causal = causal
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, (img // patch) ** 2 + 1, dim))
        self.patch_embed = PatchEmbed(patch, dim)
        self.blocks = nn.Sequential(*[Block(dim, heads, causal) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.patch_embed(x)
        cls = self.cls_token.expand(x.shape[0], -1, -1) + self.pos_embed[:, :1]
        x = x + self.pos_embed[:, 1:]
        x = torch.cat([x, cls] if self.causal else [cls, x], dim=1)
        x = self.norm(self.blocks(x))
        return self.head(x[:, -1] if self.causal else x[:, 0])


def model(d):
    cfg = read_config(d)
    m = VisionTransformer(cfg["img"], cfg["patch"], cfg["embed_dim"], cfg["depth"], cfg["heads"], cfg["classes"],
                          cfg["causal"]).double()
    sd = {k: load(d, k).double() for k in m.state_dict()}
    m.load_state_dict(sd)
    logits = m(load(d, "input").double())
    loss = torch.sum(-load(d, "target").double() * F.log_softmax(logits, dim=-1), dim=-1).mean()
    loss.backward()
    save(d, "logits", logits)
    save(d, "loss", loss.reshape(1))
    for k, p in m.named_parameters():
        save(d, "grad/" + k, p.grad)


if __name__ == "__main__":
    torch.manual_seed(0)
    {"attention": attention, "model": model}[sys.argv[1]](sys.argv[2])
