"""Typed run configuration. YAML files in ``configs/`` are serialized instances of ``RunConfig``.

Every field is checked when the dataclass is built; an error names the field (``train.lr``) and
what was expected, so a bad YAML or command-line override fails before any work starts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

ScheduleKind = Literal["linear", "cosine", "sigmoid"]
Objective = Literal["eps", "v", "x0"]
Weighting = Literal["uniform", "min_snr"]
SamplerName = Literal["ddpm", "ddim", "dpmpp_2m", "euler", "heun"]
Spacing = Literal["leading", "trailing", "linspace"]
TaskName = Literal["super_resolution", "denoising", "colorization", "inpainting", "jpeg"]
Precision = Literal["fp32", "bf16", "fp16"]


class ConfigError(ValueError):
    """A config value is missing, unknown or out of range; the message names the field."""


def _check(cond: bool, name: str, msg: str, value: Any) -> None:
    if not cond:
        raise ConfigError(f"{name} {msg}, got {value!r}")


@dataclass
class ModelConfig:
    """The network's constructor arguments (spec names and defaults). ``preset`` fills them first."""

    preset: str | None = None  # a name from condiff.nn.PRESETS; explicit fields below override it
    in_img_channels: int = 2
    out_img_channels: int = 1
    base_channels: int = 64
    channel_mults: tuple[int, ...] = (1, 2, 3, 4)
    num_res_blocks_per_level: int = 2
    attention_resolutions: tuple[int, ...] = (120, 60)
    dropout_rate: float = 0.1
    time_emb_dim: int = 256
    time_emb_mlp_dim: int = 1024
    num_heads_attn: int = 8
    num_groups_norm: int = 32
    initial_img_resolution: int = 120

    @property
    def cond_channels(self) -> int:
        """Channels of the conditioning image (the network's input minus the noisy target)."""
        return self.in_img_channels - self.out_img_channels

    @property
    def size_multiple(self) -> int:
        """What image sides must divide by: one halving per level but the last."""
        return 2 ** (len(self.channel_mults) - 1)

    def network_kwargs(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("preset")
        return d

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> ModelConfig:
        from condiff.nn.presets import preset_kwargs

        return cls(preset=name, **{**preset_kwargs(name), **overrides})


@dataclass
class DiffusionConfig:
    """The noising process and training objective."""

    schedule: ScheduleKind = "linear"  # DDPM's linear betas 1e-4..0.02 (Ho et al. 2020)
    num_timesteps: int = 1000
    rescale_zero_terminal_snr: bool = False  # Lin et al. 2024; pair with objective "v"
    objective: Objective = "eps"  # the spec's network predicts the noise
    weighting: Weighting = "uniform"
    snr_gamma: float = 5.0  # min-SNR-gamma (Hang et al. 2023), used when weighting == "min_snr"
    loss: Literal["l2", "l1"] = "l2"
    cond_drop_prob: float = 0.0  # replace the condition by zeros with this probability
    # Diffuse the residual target - cond[:C_target] (SRDiff, Li et al. 2022); samples add it back.
    # For tasks whose condition is already a rough target (super-resolution, denoising, JPEG).
    residual: bool = False
    # The diffusion runs on target_scale * (target [- cond]): about 0.5 / its std puts it at the
    # spread the schedule was made for (images in [-1, 1] have std ~0.5; EDM's sigma_data). A
    # 4x super-resolution residual has std ~0.12, so 4; with 1 most of the schedule is noise.
    target_scale: float = 1.0
    # Share of training samples drawn at the top timestep t = T-1 (the rest uniform). There the
    # x0 prediction is the posterior mean E[x0 | cond] (exactly so with zero terminal SNR): the
    # "mean" estimate, one network call. 0 = plain uniform timesteps.
    top_t_fraction: float = 0.0

    def __post_init__(self) -> None:
        _check(
            self.num_timesteps >= 2, "diffusion.num_timesteps", "must be >= 2", self.num_timesteps
        )
        _check(self.target_scale > 0, "diffusion.target_scale", "must be > 0", self.target_scale)
        _check(
            0 <= self.top_t_fraction < 1,
            "diffusion.top_t_fraction",
            "must be in [0, 1)",
            self.top_t_fraction,
        )
        _check(self.snr_gamma > 0, "diffusion.snr_gamma", "must be > 0", self.snr_gamma)
        _check(
            0 <= self.cond_drop_prob < 1,
            "diffusion.cond_drop_prob",
            "must be in [0, 1)",
            self.cond_drop_prob,
        )


@dataclass
class TaskConfig:
    """A degradation that makes the condition from a clean image, on the fly."""

    name: TaskName = "super_resolution"
    factor: int = 4  # super_resolution: downscale factor (2, 4 or 8)
    sigma: float = 0.2  # denoising: Gaussian noise std on the [0, 1] scale
    quality: int = 20  # jpeg: JPEG quality 1..95
    mask_fraction: float = 0.25  # inpainting: rough fraction of pixels hidden
    # super_resolution: round the low-resolution image to 8 bits, as a user's file holds it (the
    # field's protocol); false keeps it float.
    quantize: bool = True

    def __post_init__(self) -> None:
        _check(self.factor in (2, 4, 8), "data.task.factor", "must be 2, 4 or 8", self.factor)
        _check(self.sigma > 0, "data.task.sigma", "must be > 0", self.sigma)
        _check(1 <= self.quality <= 95, "data.task.quality", "must be in 1..95", self.quality)
        _check(
            0 < self.mask_fraction < 1,
            "data.task.mask_fraction",
            "must be in (0, 1)",
            self.mask_fraction,
        )


@dataclass
class DataConfig:
    """Where images come from. ``kind: paired`` reads cond/ + target/; ``kind: task`` degrades clean images."""

    kind: Literal["task", "paired"] = "task"
    root: str = "bundled"  # folder of images; for kind "task", "bundled" = the shipped photographs
    cond_dir: str = "cond"  # paired: sub-folder (of root) with condition images
    target_dir: str = "target"  # paired: sub-folder (of root) with target images
    manifest: str | None = None  # paired: CSV of "cond,target" paths instead of the folders
    task: TaskConfig = field(default_factory=TaskConfig)
    color: Literal["gray", "rgb"] = "gray"  # task kind: how clean images are read
    crop_size: int = 64  # training crops (pixels per side)
    val_count: int = 2  # images held out for validation (deterministic: by sorted name hash)
    flip: bool = True  # random horizontal and vertical flips
    rotate: bool = False  # also random 90-degree turns: with flips, all 8 orientations of a crop
    num_workers: int = 0
    pin_memory: bool = True

    def __post_init__(self) -> None:
        _check(self.crop_size >= 8, "data.crop_size", "must be >= 8", self.crop_size)
        _check(self.val_count >= 0, "data.val_count", "must be >= 0", self.val_count)
        _check(self.num_workers >= 0, "data.num_workers", "must be >= 0", self.num_workers)


@dataclass
class TrainConfig:
    """Optimisation, precision, logging and checkpointing."""

    output_dir: str = "runs/default"
    steps: int = 10000
    batch_size: int = 32  # global batch per optimizer step (all processes, all micro-steps)
    grad_accum: int = 1  # micro-steps per optimizer step
    lr: float = 2e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 500
    lr_schedule: Literal["constant", "cosine"] = "constant"
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping
    ema_decay: float = 0.999
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    channels_last: bool | None = None  # None: on for CUDA
    compile: bool | None = None  # torch.compile the network; None: on for CUDA
    # attention kernel: auto (condiff's Triton kernel on CUDA where Triton is installed), sdpa, triton
    attention: Literal["auto", "sdpa", "triton"] = "auto"
    fused_adamw: bool | None = None  # None: on for CUDA
    seed: int = 0
    device: str = "auto"
    log_every: int = 50
    image_every: int = 1000
    val_every: int = 1000
    val_steps: int = 20  # sampler steps for validation PSNR/SSIM
    ckpt_every: int = 1000
    keep_last: int = 3
    max_nonfinite: int = 20  # consecutive non-finite losses before the run stops
    # Start from trained weights (and their EMA) with a fresh optimizer at step 0: a run or
    # checkpoint folder, or "pretrained:NAME" for weights shipped with condiff (fine-tuning).
    # Ignored when --resume finds a checkpoint of this run.
    init_from: str | None = None
    # Stop with a checkpoint after this many minutes in the training loop (a job's time limit);
    # --resume auto continues. None: no limit.
    max_minutes: float | None = None

    def __post_init__(self) -> None:
        for name in (
            "steps",
            "batch_size",
            "grad_accum",
            "log_every",
            "image_every",
            "val_every",
            "ckpt_every",
            "keep_last",
            "max_nonfinite",
            "val_steps",
        ):
            v = getattr(self, name)
            _check(isinstance(v, int) and v >= 1, f"train.{name}", "must be a positive integer", v)
        _check(self.lr > 0, "train.lr", "must be > 0", self.lr)
        if self.max_minutes is not None:
            _check(self.max_minutes > 0, "train.max_minutes", "must be > 0", self.max_minutes)
        _check(self.weight_decay >= 0, "train.weight_decay", "must be >= 0", self.weight_decay)
        _check(self.warmup_steps >= 0, "train.warmup_steps", "must be >= 0", self.warmup_steps)
        _check(self.grad_clip >= 0, "train.grad_clip", "must be >= 0", self.grad_clip)
        _check(0 <= self.ema_decay < 1, "train.ema_decay", "must be in [0, 1)", self.ema_decay)
        _check(all(0 <= b < 1 for b in self.betas), "train.betas", "must be in [0, 1)", self.betas)
        _check(
            self.batch_size % self.grad_accum == 0,
            "train.batch_size",
            f"must be divisible by train.grad_accum={self.grad_accum}",
            self.batch_size,
        )


@dataclass
class SampleConfig:
    """Default sampling settings stored with a run (the CLI can override each)."""

    sampler: SamplerName = "dpmpp_2m"
    steps: int = 20
    eta: float = 0.0
    spacing: Spacing = "trailing"
    clip: bool = True  # clip x0 predictions to [-1, 1]
    dynamic_threshold: float | None = None  # percentile in (0, 1), e.g. 0.995 (Imagen); None = off

    def __post_init__(self) -> None:
        _check(self.steps >= 1, "sample.steps", "must be >= 1", self.steps)
        _check(self.eta >= 0, "sample.eta", "must be >= 0", self.eta)
        if self.dynamic_threshold is not None:
            _check(
                0 < self.dynamic_threshold < 1,
                "sample.dynamic_threshold",
                "must be in (0, 1)",
                self.dynamic_threshold,
            )


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        return from_dict(cls, d)


# --- (de)serialization -------------------------------------------------------------------------


def _to_plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_to_plain(v) for v in obj]
    return obj


def _coerce(tp: Any, value: Any, name: str) -> Any:
    origin = get_origin(tp)
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ConfigError(f"{name} must be one of {list(choices)}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, name)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{name}: bad value {value!r}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, name) for v in value)
        if len(args) != len(value):
            raise ConfigError(f"{name} must have {len(args)} items, got {value!r}")
        return tuple(_coerce(a, v, name) for a, v in zip(args, value, strict=True))
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be a mapping, got {value!r}")
        return from_dict(tp, value, prefix=name + ".")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, got {value!r}")
        return value
    return value


def from_dict(cls: type, d: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a plain mapping, naming the field of any bad value."""
    if d is None:
        d = {}
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - known
    if unknown:
        raise ConfigError(
            f"unknown config field(s) {sorted(prefix + k for k in unknown)}; "
            f"valid fields here: {sorted(known)}"
        )
    kwargs: dict[str, Any] = {}
    if cls is ModelConfig and d.get("preset"):
        from condiff.nn.presets import preset_kwargs

        try:
            kwargs.update(preset_kwargs(d["preset"]))
        except ValueError as e:
            raise ConfigError(f"{prefix}preset: {e}") from None
    for k, v in d.items():
        kwargs[k] = _coerce(hints[k], v, prefix + k)
    return cls(**kwargs)


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML (or JSON) run config and apply ``section.field=value`` overrides."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    with path.open() as f:
        raw = yaml.safe_load(f) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return RunConfig.from_dict(apply_overrides(raw, overrides or []))


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``["train.lr=1e-4", "data.task.factor=8"]`` -> nested updates (values parsed as YAML).

    ``model.preset=NAME`` starts the model section afresh from that preset (a saved YAML spells
    out every model field, which would otherwise override the preset); ``model.*`` overrides
    after it still apply.
    """
    raw = json.loads(json.dumps(raw))  # deep copy of plain data
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.field=value")
        key, value = item.split("=", 1)
        if key.strip() == "model.preset":
            raw["model"] = {"preset": yaml.safe_load(value)}
            continue
        parts = key.strip().split(".")
        node = raw
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p} is not a section")
        node[parts[-1]] = yaml.safe_load(value)
    return raw


def save_config(cfg: RunConfig, path: str | Path) -> None:
    path = Path(path)
    with path.open("w") as f:
        yaml.safe_dump(cfg.to_dict(), f, sort_keys=False)
