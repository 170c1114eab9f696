"""The perceptual stage's critic: a U-Net discriminator with spectral norm (Real-ESRGAN).

Wang et al. 2021, "Real-ESRGAN", section 3.3: a U-Net whose output is one realness logit per
pixel, so the generator gets a detailed, local gradient; spectral norm on every convolution but
the first and last keeps its training stable. DiffIR (Xia et al. 2023) fine-tunes with the same
critic. It reads only the image (not the condition): the pixel and feature losses tie the output
to its input.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm


class UNetDiscriminator(nn.Module):
    """``(B, C, H, W)`` images in [-1, 1] -> ``(B, 1, H, W)`` realness logits; H, W divisible by 8."""

    def __init__(self, in_channels: int = 3, channels: int = 64) -> None:
        super().__init__()
        c = channels

        def sn(cin: int, cout: int, stride: int = 1, k: int = 3) -> nn.Module:
            pad = (k - 1) // 2  # k 4, stride 2: exact halving; k 3: same size
            return spectral_norm(nn.Conv2d(cin, cout, k, stride, pad, bias=False))

        self.conv0 = nn.Conv2d(in_channels, c, 3, 1, 1)
        # encoder: three halvings
        self.down1, self.down2, self.down3 = (
            sn(c, 2 * c, 2, 4),
            sn(2 * c, 4 * c, 2, 4),
            sn(4 * c, 8 * c, 2, 4),
        )
        # decoder: three doublings with skips from the encoder
        self.up1, self.up2, self.up3 = sn(8 * c, 4 * c), sn(4 * c, 2 * c), sn(2 * c, c)
        self.extra1, self.extra2 = sn(c, c), sn(c, c)
        self.out = nn.Conv2d(c, 1, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        def act(h: Tensor) -> Tensor:
            return F.leaky_relu(h, 0.2)

        def up(h: Tensor) -> Tensor:
            return F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False)

        x0 = act(self.conv0(x))  # (B, c, H, W)
        x1 = act(self.down1(x0))  # (B, 2c, H/2, W/2)
        x2 = act(self.down2(x1))  # (B, 4c, H/4, W/4)
        x3 = act(self.down3(x2))  # (B, 8c, H/8, W/8)
        h = act(self.up1(up(x3))) + x2
        h = act(self.up2(up(h))) + x1
        h = act(self.up3(up(h))) + x0
        h = act(self.extra2(act(self.extra1(h))))
        return self.out(h)
