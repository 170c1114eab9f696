"""The spec's ConditionalUNet (conditional-unet-seed.md, read with READING.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from condiff.nn.blocks import AttentionBlock, Downsample, ResidualBlock, Upsample
from condiff.nn.embeddings import SinusoidalPositionalEncoding, time_mlp


@dataclass(frozen=True)
class LevelPlan:
    """One U-Net level as built: where it runs and what it holds (for ``condiff info``)."""

    stage: str  # "encoder" | "bottleneck" | "decoder"
    index: int
    resolution: int  # feature-map side at initial_img_resolution
    in_channels: int
    out_channels: int
    res_blocks: int
    attention: bool
    resample: str  # "down" | "up" | "-"


class _Level(nn.Module):
    def __init__(
        self, res: list[ResidualBlock], attn: AttentionBlock | None, resample: nn.Module | None
    ):
        super().__init__()
        self.res = nn.ModuleList(res)
        self.attn = attn
        self.resample = resample


@dataclass(frozen=True)
class _Blocks:
    """Makes the network's residual and attention blocks with its shared settings."""

    time_dim: int
    groups: int
    dropout: float
    heads: int

    def res(self, cin: int, cout: int) -> ResidualBlock:
        return ResidualBlock(
            cin, cout, self.time_dim, num_groups=self.groups, dropout_rate=self.dropout
        )

    def attn(self, ch: int) -> AttentionBlock:
        return AttentionBlock(ch, num_heads=self.heads, num_groups=self.groups)


class ConditionalUNet(nn.Module):
    """Predicts the noise of a noisy target from ``[x_t, cond]`` concatenated on channels, and ``t``.

    ``forward(x_concat, time)``: ``x_concat`` is ``(B, in_img_channels, H, W)``, ``time`` is ``(B,)``;
    returns ``(B, out_img_channels, H, W)``. H and W must divide by ``2 ** (len(channel_mults) - 1)``;
    attention placement is fixed at construction from ``initial_img_resolution``.
    """

    def __init__(
        self,
        in_img_channels: int = 2,
        out_img_channels: int = 1,
        base_channels: int = 64,
        channel_mults: tuple[int, ...] = (1, 2, 3, 4),
        num_res_blocks_per_level: int = 2,
        attention_resolutions: tuple[int, ...] = (120, 60),
        dropout_rate: float = 0.1,
        time_emb_dim: int = 256,
        time_emb_mlp_dim: int = 1024,
        num_heads_attn: int = 8,
        num_groups_norm: int = 32,
        initial_img_resolution: int = 120,
    ) -> None:
        super().__init__()
        channel_mults = tuple(channel_mults)
        attention_resolutions = tuple(attention_resolutions)
        self.config: dict[str, Any] = dict(
            in_img_channels=in_img_channels,
            out_img_channels=out_img_channels,
            base_channels=base_channels,
            channel_mults=channel_mults,
            num_res_blocks_per_level=num_res_blocks_per_level,
            attention_resolutions=attention_resolutions,
            dropout_rate=dropout_rate,
            time_emb_dim=time_emb_dim,
            time_emb_mlp_dim=time_emb_mlp_dim,
            num_heads_attn=num_heads_attn,
            num_groups_norm=num_groups_norm,
            initial_img_resolution=initial_img_resolution,
        )
        _validate_args(**self.config)
        self.in_img_channels = in_img_channels
        self.out_img_channels = out_img_channels
        self.size_multiple = 2 ** (len(channel_mults) - 1)
        self.plan: list[LevelPlan] = []
        make = _Blocks(time_emb_mlp_dim, num_groups_norm, dropout_rate, num_heads_attn)

        # 4.1 quantization stubs: identities in float, observation points for int8 deployment.
        self.quant = torch.ao.quantization.QuantStub()
        self.dequant = torch.ao.quantization.DeQuantStub()
        self.time_embedding = SinusoidalPositionalEncoding(time_emb_dim)
        self.time_mlp = time_mlp(time_emb_dim, time_emb_mlp_dim)
        self.conv_in = nn.Conv2d(in_img_channels, base_channels, kernel_size=3, padding=1)
        skips, resolution = self._build_encoder(make, self.config)
        ch = skips[-1]

        # 4.4 bottleneck: res -> attn -> res, attention always present.
        self.bottleneck_res1 = make.res(ch, ch)
        self.bottleneck_attn = make.attn(ch)
        self.bottleneck_res2 = make.res(ch, ch)
        self.plan.append(LevelPlan("bottleneck", 1, resolution, ch, ch, 2, True, "-"))
        self._build_decoder(make, self.config, skips, resolution)

        # 4.6 output head.
        self.conv_out_norm = nn.GroupNorm(num_groups_norm, base_channels)
        self.conv_out_act = nn.SiLU()
        self.conv_out = nn.Conv2d(base_channels, out_img_channels, kernel_size=3, padding=1)

    def _build_encoder(self, make: _Blocks, c: dict[str, Any]) -> tuple[list[int], int]:
        """4.3 encoder: one skip per level, after its res blocks and attention, before
        downsampling. Returns the skips' channels and the bottleneck's resolution."""
        self.encoder = nn.ModuleList()
        base, mults = c["base_channels"], c["channel_mults"]
        ch, resolution = base, c["initial_img_resolution"]
        skips: list[int] = []
        for i, mult in enumerate(mults):
            out = base * mult
            blocks = [
                make.res(ch if j == 0 else out, out) for j in range(c["num_res_blocks_per_level"])
            ]
            has_attn = resolution in c["attention_resolutions"]
            last = i == len(mults) - 1
            self.encoder.append(
                _Level(
                    blocks, make.attn(out) if has_attn else None, None if last else Downsample(out)
                )
            )
            self.plan.append(
                LevelPlan(
                    "encoder",
                    i + 1,
                    resolution,
                    ch,
                    out,
                    len(blocks),
                    has_attn,
                    "-" if last else "down",
                )
            )
            skips.append(out)
            ch = out
            if not last:
                resolution //= 2
        return skips, resolution

    def _build_decoder(
        self, make: _Blocks, c: dict[str, Any], skips: list[int], resolution: int
    ) -> None:
        """4.5 decoder: concat the level's skip once, before its first res block."""
        self.decoder = nn.ModuleList()
        base, mults = c["base_channels"], c["channel_mults"]
        ch = skips[-1]
        for i, mult in enumerate(reversed(mults)):
            out = base * mult
            skip = skips[len(mults) - 1 - i]
            blocks = [make.res(ch + skip, out)] + [
                make.res(out, out) for _ in range(c["num_res_blocks_per_level"] - 1)
            ]
            has_attn = resolution in c["attention_resolutions"]
            last = i == len(mults) - 1
            self.decoder.append(
                _Level(
                    blocks, make.attn(out) if has_attn else None, None if last else Upsample(out)
                )
            )
            self.plan.append(
                LevelPlan(
                    "decoder",
                    i + 1,
                    resolution,
                    ch + skip,
                    out,
                    len(blocks),
                    has_attn,
                    "-" if last else "up",
                )
            )
            ch = out
            if not last:
                resolution *= 2

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> ConditionalUNet:
        """Build a named preset (``seed-default``, ``seed-rgb480``, ``small``, ``tiny``)."""
        from condiff.nn.presets import preset_kwargs

        return cls(**{**preset_kwargs(name), **overrides})

    def check_input(self, x_concat: Tensor, time: Tensor) -> None:
        """Raise a ValueError that says what was expected when the inputs cannot be run."""
        if x_concat.ndim != 4:
            raise ValueError(f"x_concat must be (B, C, H, W), got shape {tuple(x_concat.shape)}")
        b, c, h, w = x_concat.shape
        if c != self.in_img_channels:
            raise ValueError(
                f"x_concat has {c} channels but the model expects in_img_channels="
                f"{self.in_img_channels} (noisy target and condition concatenated)"
            )
        m = self.size_multiple
        if h % m or w % m:
            raise ValueError(
                f"image sides must be divisible by {m} (2^(levels-1)), got {h}x{w}; "
                "pad or crop the input, or use tiled inference"
            )
        if time.shape != (b,):
            raise ValueError(f"time must have shape (B,) = ({b},), got {tuple(time.shape)}")

    def forward(self, x_concat: Tensor, time: Tensor) -> Tensor:
        if not (torch.jit.is_tracing() or torch.compiler.is_compiling()):
            self.check_input(x_concat, time)
        x = self.quant(x_concat)
        t_emb = self.time_mlp(self.time_embedding(time))  # (B, time_emb_mlp_dim), once per forward
        h = self.conv_in(x)
        skips: list[Tensor] = []
        for level in self.encoder:
            for block in level.res:
                h = block(h, t_emb)
            if level.attn is not None:
                h = level.attn(h)
            skips.append(h)
            if level.resample is not None:
                h = level.resample(h)
        h = self.bottleneck_res1(h, t_emb)
        h = self.bottleneck_attn(h)
        h = self.bottleneck_res2(h, t_emb)
        for level in self.decoder:
            h = torch.cat([h, skips.pop()], dim=1)  # (B, C_dec + C_skip, H, W)
            for block in level.res:
                h = block(h, t_emb)
            if level.attn is not None:
                h = level.attn(h)
            if level.resample is not None:
                h = level.resample(h)
        h = self.conv_out(self.conv_out_act(self.conv_out_norm(h)))
        return self.dequant(h)


def _validate_args(
    *,
    in_img_channels: int,
    out_img_channels: int,
    base_channels: int,
    channel_mults: tuple[int, ...],
    num_res_blocks_per_level: int,
    dropout_rate: float,
    num_heads_attn: int,
    num_groups_norm: int,
    initial_img_resolution: int,
    **_: Any,  # the other constructor arguments need no check here
) -> None:
    for name, value in [
        ("in_img_channels", in_img_channels),
        ("out_img_channels", out_img_channels),
        ("base_channels", base_channels),
        ("num_res_blocks_per_level", num_res_blocks_per_level),
        ("num_heads_attn", num_heads_attn),
        ("num_groups_norm", num_groups_norm),
        ("initial_img_resolution", initial_img_resolution),
    ]:
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not channel_mults or any(int(m) < 1 for m in channel_mults):
        raise ValueError(
            f"channel_mults must be a non-empty tuple of positive ints, got {channel_mults}"
        )
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"dropout_rate must be in [0, 1), got {dropout_rate}")
    for mult in channel_mults:
        ch = base_channels * mult
        if ch % num_groups_norm:
            raise ValueError(
                f"level channels {ch} (base_channels {base_channels} x mult {mult}) are not divisible "
                f"by num_groups_norm={num_groups_norm}"
            )
        if ch % num_heads_attn:
            raise ValueError(
                f"level channels {ch} (base_channels {base_channels} x mult {mult}) are not divisible "
                f"by num_heads_attn={num_heads_attn}"
            )
    m = 2 ** (len(channel_mults) - 1)
    if initial_img_resolution % m:
        raise ValueError(
            f"initial_img_resolution={initial_img_resolution} must be divisible by {m} "
            f"(2^(levels-1) for {len(channel_mults)} levels)"
        )
