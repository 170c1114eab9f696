"""The spec's network. It knows nothing of noise schedules, training or file formats.

Members load on first use (``condiff._lazy``): ``condiff.nn.presets`` is read without torch.
"""

from typing import TYPE_CHECKING

from condiff._lazy import lazy_exports

_BLOCKS, _PRESETS, _UNET = "condiff.nn.blocks", "condiff.nn.presets", "condiff.nn.unet"
_MEMBERS = {
    "PRESETS": _PRESETS,
    "AttentionBlock": _BLOCKS,
    "ConditionalUNet": _UNET,
    "Downsample": _BLOCKS,
    "LevelPlan": _UNET,
    "ResidualBlock": _BLOCKS,
    "SinusoidalPositionalEncoding": "condiff.nn.embeddings",
    "Upsample": _BLOCKS,
    "preset_kwargs": _PRESETS,
    "set_attention_kernel": "condiff.nn.attention",
}
__getattr__ = lazy_exports(__name__, _MEMBERS)
__all__ = [
    "PRESETS",
    "AttentionBlock",
    "ConditionalUNet",
    "Downsample",
    "LevelPlan",
    "ResidualBlock",
    "SinusoidalPositionalEncoding",
    "Upsample",
    "preset_kwargs",
    "set_attention_kernel",
]

if TYPE_CHECKING:
    from condiff.nn.attention import set_attention_kernel
    from condiff.nn.blocks import AttentionBlock, Downsample, ResidualBlock, Upsample
    from condiff.nn.embeddings import SinusoidalPositionalEncoding
    from condiff.nn.presets import PRESETS, preset_kwargs
    from condiff.nn.unet import ConditionalUNet, LevelPlan
