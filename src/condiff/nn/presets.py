"""Named network configurations. ``seed-*`` are the spec's; the small ones are for CPU work."""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    # The spec's "Default Parameters" list: 1 noisy target + 1 condition -> 1, at 120x120.
    "seed-default": {},
    # The spec's worked example (sections 2 and 4): RGB target + RGB condition at 480x480.
    "seed-rgb480": {"in_img_channels": 6, "out_img_channels": 3, "initial_img_resolution": 480},
    # ~1/4 width of the spec's network, for CPU training in minutes (the CPU demo).
    "small": {
        "base_channels": 32,
        "channel_mults": (1, 2, 2),
        "num_res_blocks_per_level": 1,
        "attention_resolutions": (16,),
        "dropout_rate": 0.0,
        "time_emb_dim": 64,
        "time_emb_mlp_dim": 128,
        "num_heads_attn": 4,
        "num_groups_norm": 8,
        "initial_img_resolution": 64,
    },
    # Smallest sensible network, for tests.
    "tiny": {
        "base_channels": 16,
        "channel_mults": (1, 2),
        "num_res_blocks_per_level": 1,
        "attention_resolutions": (8,),
        "dropout_rate": 0.0,
        "time_emb_dim": 32,
        "time_emb_mlp_dim": 64,
        "num_heads_attn": 2,
        "num_groups_norm": 8,
        "initial_img_resolution": 16,
    },
}


def preset_kwargs(name: str) -> dict[str, Any]:
    """Constructor keyword arguments of a preset (the spec's defaults fill the rest)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    return dict(PRESETS[name])
