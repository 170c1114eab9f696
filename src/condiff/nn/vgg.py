"""VGG16's convolutional features (Simonyan & Zisserman 2015), for the perceptual stage's loss.

The ImageNet weights come from ``condiff metrics setup`` (the same converted file DISTS uses) or
any safetensors file with ``conv{i}.weight`` / ``conv{i}.bias`` for i = 0..12, in fp32 or fp16,
holding at least the layers asked for. Taps are taken *before* the ReLU (ESRGAN, Wang et al. 2018,
section 3.4: features after activation are sparse and give weaker supervision).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# the conv indices of each block (0-based over the 13 convolutions); the last of each is tapped
BLOCKS = ((0, 1), (2, 3), (4, 5, 6), (7, 8, 9), (10, 11, 12))
TAP_NAMES = ("conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3")
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class VGG16Features(nn.Module):
    """``(B, C, H, W)`` images in [0, 1] (C = 1 or 3) -> the pre-ReLU taps of the first
    ``depth`` blocks. Frozen; the weights are buffers (kept out of optimizers and checkpoints'
    parameters)."""

    def __init__(self, weights: dict[str, Tensor], depth: int) -> None:
        super().__init__()
        if not 1 <= depth <= len(BLOCKS):
            raise ValueError(f"VGG16 depth must be 1..{len(BLOCKS)}, got {depth}")
        self.depth = depth
        self.convs = [i for block in BLOCKS[:depth] for i in block]
        for i in self.convs:
            for part in ("weight", "bias"):
                key = f"conv{i}.{part}"
                if key not in weights:
                    raise ValueError(f"VGG16 weights lack {key} (depth {depth} needs conv0..{i})")
                self.register_buffer(f"w{i}_{part}", weights[key].float(), persistent=False)
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x  # gray replicated
        h = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        taps = []
        for b, block in enumerate(BLOCKS[: self.depth]):
            if b > 0:
                h = F.max_pool2d(h, 2)
            for j, i in enumerate(block):
                w = getattr(self, f"w{i}_weight").to(h.dtype)
                bias = getattr(self, f"w{i}_bias").to(h.dtype)
                h = F.conv2d(h if j == 0 and b == 0 else F.relu(h), w, bias, padding=1)
            taps.append(h)  # pre-activation; the next conv applies the ReLU first
        return taps


def load_vgg16(path: str | Path, depth: int) -> VGG16Features:
    """The features from a safetensors file; a missing file is an error saying how to get it."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: VGG16 weights missing; run `condiff metrics setup` once, or set "
            "perceptual.vgg_weights to a safetensors file of VGG16's conv0..conv12"
        )
    return VGG16Features(load_file(str(path)), depth)
