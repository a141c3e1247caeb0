"""timm_names.py: timm's checkpoint_filter_fn key mapping for MambaOut (shared/spec/mambaout.md §2.2) and its
inverse, written independently of the C++ one (nn/io/names.cpp) so the tests can cross-check them.
"""
import re


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
