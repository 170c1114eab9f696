"""The spec's network. It knows nothing of noise schedules, training or file formats."""

from condiff.nn.attention import set_attention_kernel
from condiff.nn.blocks import AttentionBlock, Downsample, ResidualBlock, Upsample
from condiff.nn.embeddings import SinusoidalPositionalEncoding
from condiff.nn.presets import PRESETS, preset_kwargs
from condiff.nn.unet import ConditionalUNet, LevelPlan

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
