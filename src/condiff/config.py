"""Typed run configuration. YAML files in ``configs/`` are serialized instances of ``RunConfig``.

Every field is checked when the dataclass is built; an error names the field (``train.lr``) and
what was expected, so a bad YAML or command-line override fails before any work starts.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args, get_origin

import yaml

ScheduleKind = Literal["linear", "cosine", "sigmoid"]
Objective = Literal["eps", "v", "x0"]
Weighting = Literal["uniform", "min_snr"]
SamplerName = Literal["ddpm", "ddim", "dpmpp_2m", "dpmpp_2m_sde", "euler", "heun"]
Spacing = Literal["leading", "trailing", "linspace"]
TaskName = Literal["super_resolution", "denoising", "colorization", "inpainting", "jpeg"]
Precision = Literal["fp32", "bf16", "fp16"]


class ConfigError(ValueError):
    """A config value is missing, unknown or out of range; the message names the field."""


@dataclass(frozen=True)
class Check:
    """A rule a field's value must keep, declared beside it: ``Annotated[float, POSITIVE]``."""

    ok: Callable[[Any], bool]
    says: str  # what is expected, e.g. "must be > 0"


POSITIVE = Check(lambda v: math.isfinite(v) and v > 0, "must be a finite number > 0")
NON_NEGATIVE = Check(lambda v: math.isfinite(v) and v >= 0, "must be a finite number >= 0")
COUNT = Check(lambda v: isinstance(v, int) and v >= 1, "must be a positive integer")
FRACTION = Check(lambda v: 0 <= v < 1, "must be in [0, 1)")
OPEN_UNIT = Check(lambda v: 0 < v < 1, "must be in (0, 1)")
UNIT = Check(lambda v: 0 <= v <= 1, "must be in [0, 1]")


def _range(v: Any) -> tuple[float, float]:
    return (v, v) if isinstance(v, int | float) else (v[0], v[1])


def level_range(value: float | tuple[float, float]) -> tuple[float, float]:
    """``x`` or ``(lo, hi)`` -> ``(lo, hi)``: a task level that is fixed, or drawn per image."""
    return _range(value)


SIGMA = Check(
    lambda v: 0 <= _range(v)[0] <= _range(v)[1] <= 255 and _range(v)[1] > 0,
    "must be a noise std on the 0-255 scale in (0, 255], or a range [lo, hi] with "
    "0 <= lo <= hi <= 255",
)
QUALITY = Check(
    lambda v: 1 <= _range(v)[0] <= _range(v)[1] <= 100,
    "must be a JPEG quality in 1..100, or a range [lo, hi] with 1 <= lo <= hi <= 100",
)


class Checked:
    """Checks every ``Annotated[..., Check]`` field when built; errors name ``SECTION.field``."""

    SECTION: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for name, check in _checks(type(self)):
            value = getattr(self, name)
            if value is not None and not check.ok(value):
                raise ConfigError(f"{self.SECTION}.{name} {check.says}, got {value!r}")


@functools.cache
def _checks(cls: type) -> list[tuple[str, Check]]:
    hints = typing.get_type_hints(cls, include_extras=True)
    return [
        (name, meta)
        for name, tp in hints.items()
        if get_origin(tp) is Annotated
        for meta in tp.__metadata__
        if isinstance(meta, Check)
    ]


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
class DiffusionConfig(Checked):
    """The noising process and training objective."""

    SECTION: ClassVar[str] = "diffusion"
    schedule: ScheduleKind = "linear"  # DDPM's linear betas 1e-4..0.02 (Ho et al. 2020)
    num_timesteps: Annotated[int, Check(lambda v: v >= 2, "must be >= 2")] = 1000
    rescale_zero_terminal_snr: bool = False  # Lin et al. 2024; pair with objective "v"
    objective: Objective = "eps"  # the spec's network predicts the noise
    weighting: Weighting = "uniform"
    # min-SNR-gamma (Hang et al. 2023), used when weighting == "min_snr"
    snr_gamma: Annotated[float, POSITIVE] = 5.0
    loss: Literal["l2", "l1"] = "l2"
    # replace the condition by zeros with this probability
    cond_drop_prob: Annotated[float, FRACTION] = 0.0
    # Diffuse the residual target - cond[:C_target] (SRDiff, Li et al. 2022); samples add it back.
    # For tasks whose condition is already a rough target (super-resolution, denoising, JPEG).
    residual: bool = False
    # The diffusion runs on target_scale * (target [- cond]): about 0.5 / its std puts it at the
    # spread the schedule was made for (images in [-1, 1] have std ~0.5; EDM's sigma_data). A
    # 4x super-resolution residual has std ~0.12, so 4; with 1 most of the schedule is noise.
    target_scale: Annotated[float, POSITIVE] = 1.0
    # Share of training samples drawn at the top timestep t = T-1 (the rest uniform). There the
    # x0 prediction is the posterior mean E[x0 | cond] (exactly so with zero terminal SNR): the
    # "mean" estimate, one network call. 0 = plain uniform timesteps.
    top_t_fraction: Annotated[float, FRACTION] = 0.0


@dataclass
class TaskConfig(Checked):
    """A degradation that makes the condition from a clean image, on the fly."""

    SECTION: ClassVar[str] = "data.task"
    name: TaskName = "super_resolution"
    # super_resolution: downscale factor (2, 4 or 8)
    factor: Annotated[int, Check(lambda v: v in (2, 4, 8), "must be 2, 4 or 8")] = 4
    # denoising: Gaussian noise std on the 0-255 scale (25 = the field's sigma 25), or a range
    # [lo, hi] drawn uniformly per training image (a blind model, e.g. [0, 55])
    sigma: Annotated[float | tuple[float, float], SIGMA] = 25.0
    # jpeg: JPEG quality (IJG scale 1..100), or a range [lo, hi] drawn per training image
    quality: Annotated[int | tuple[int, int], QUALITY] = 20
    # inpainting: rough fraction of pixels hidden
    mask_fraction: Annotated[float, OPEN_UNIT] = 0.25
    # super_resolution: round the low-resolution image to 8 bits, as a user's file holds it (the
    # field's protocol); false keeps it float.
    quantize: bool = True
    # denoising: add a noise-level map to the condition (FFDNet's and DRUNet's input), one more
    # channel holding each image's sigma (sigma / 127.5 - 1): the model is told the level
    # instead of finding it, and `evaluate --protocol denoise` gives it each level's map
    noise_map: bool = False
    # jpeg: the fraction of training images encoded with JPEG's block grid off the crop's corner
    # by a random 0..7 pixels each way (0..15 in colour: 4:2:0's 16-pixel blocks), so the model
    # also restores JPEG content cut or framed off the grid. 0, the default, is the field's
    # protocol (grids start at the corner); session 19: a cut 4 px off the grid kept 0.24 of
    # configs/jpeg-rgb.yaml's 2.32 dB (scripts/jpeg_grid_shift.py)
    grid_shift: Annotated[float, UNIT] = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.grid_shift and self.name != "jpeg":
            raise ConfigError(
                f"{self.SECTION}.grid_shift is for the jpeg task (JPEG's block grid); "
                f"this task is {self.name}"
            )
        if self.noise_map and self.name != "denoising":
            raise ConfigError(
                f"{self.SECTION}.noise_map is for the denoising task (a map of its noise level); "
                f"this task is {self.name}"
            )


@dataclass
class DataConfig(Checked):
    """Where images come from. ``kind: paired`` reads cond/ + target/; ``kind: task`` degrades clean images."""

    SECTION: ClassVar[str] = "data"
    kind: Literal["task", "paired", "shards"] = "task"
    root: str = "bundled"  # folder of images; for kind "task", "bundled" = the shipped photographs
    # kind "shards": `condiff data pack`'s output: its shards.json, or the folder / URL prefix
    # holding it (a local path, s3://, gs://, https://: any fsspec URL). Clean-image shards are
    # degraded by data.task as a folder would be; paired shards carry their conditions.
    shards: str | None = None
    # remote shards: a dataset of at most this many MB is fetched shard by shard into
    # shard_cache (default RUN/shard-cache) on first use; a larger one is read image by image
    shard_cache: str | None = None
    shard_cache_mb: Annotated[float, NON_NEGATIVE] = 4096.0
    # decoded images kept per process (each loader worker has its own LRU cache of this size)
    cache_mb: Annotated[float, NON_NEGATIVE] = 1024.0
    # the start-up check of a folder: every file's header (all), 1,000 of them (sample), or
    # none; packed shards were checked when packed
    check: Literal["all", "sample", "none"] = "all"
    cond_dir: str = "cond"  # paired: sub-folder (of root) with condition images
    target_dir: str = "target"  # paired: sub-folder (of root) with target images
    manifest: str | None = None  # paired: CSV of "cond,target" paths instead of the folders
    task: TaskConfig = field(default_factory=TaskConfig)
    color: Literal["gray", "rgb"] = "gray"  # task kind: how clean images are read
    crop_size: Annotated[int, Check(lambda v: v >= 8, "must be >= 8")] = 64  # training crops
    # images held out for validation (deterministic: by sorted name hash)
    val_count: Annotated[int, NON_NEGATIVE] = 2
    flip: bool = True  # random horizontal and vertical flips
    rotate: bool = False  # also random 90-degree turns: with flips, all 8 orientations of a crop
    num_workers: Annotated[int, NON_NEGATIVE] = 0
    pin_memory: bool = True


@dataclass
class TrainConfig(Checked):
    """Optimisation, precision, logging and checkpointing."""

    SECTION: ClassVar[str] = "train"
    output_dir: str = "runs/default"
    steps: Annotated[int, COUNT] = 10000
    # global batch per optimizer step (all processes, all micro-steps)
    batch_size: Annotated[int, COUNT] = 32
    grad_accum: Annotated[int, COUNT] = 1  # micro-steps per optimizer step
    lr: Annotated[float, POSITIVE] = 2e-4
    weight_decay: Annotated[float, NON_NEGATIVE] = 0.0
    betas: Annotated[
        tuple[float, float], Check(lambda v: all(0 <= b < 1 for b in v), "must be in [0, 1)")
    ] = (0.9, 0.999)
    warmup_steps: Annotated[int, NON_NEGATIVE] = 500
    lr_schedule: Literal["constant", "cosine"] = "constant"
    grad_clip: Annotated[float, NON_NEGATIVE] = 1.0  # max global grad norm; 0 disables clipping
    ema_decay: Annotated[float, FRACTION] = 0.999
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    channels_last: bool | None = None  # None: on for CUDA
    compile: bool | None = None  # torch.compile the network; None: on for CUDA
    # Replay the compiled network's forward and backward as CUDA graphs (torch.compile's
    # "reduce-overhead" mode): no per-kernel launch cost, the bound of small networks at small
    # batches (configs/denoise-gray-small.yaml's step on an H200, `condiff bench --recipe`:
    # 2,839 img/s compiled, 8,809 graphed). Needs the compiled network; CUDA only (a CPU run
    # says so and runs without).
    cuda_graphs: bool = False
    # attention kernel: auto (condiff's Triton kernel on CUDA where Triton is installed), sdpa,
    # sdpa-flash (SDPA kept off cuDNN, whose backward NaNs on Hopper at 64 tokens: session 19),
    # sdpa-safe (cuDNN only at multiples of 128 tokens, where it was finite and fastest: session
    # 20), triton
    attention: Literal["auto", "sdpa", "sdpa-flash", "sdpa-safe", "triton"] = "auto"
    fused_adamw: bool | None = None  # None: on for CUDA
    seed: int = 0
    device: str = "auto"
    log_every: Annotated[int, COUNT] = 50
    image_every: Annotated[int, COUNT] = 1000
    val_every: Annotated[int, COUNT] = 1000
    val_steps: Annotated[int, COUNT] = 20  # sampler steps for validation PSNR/SSIM
    ckpt_every: Annotated[int, COUNT] = 1000
    keep_last: Annotated[int, COUNT] = 3
    # consecutive non-finite losses before the run stops
    max_nonfinite: Annotated[int, COUNT] = 20
    # Start from trained weights (and their EMA) with a fresh optimizer at step 0: a run or
    # checkpoint folder, or "pretrained:NAME" for weights shipped with condiff (fine-tuning).
    # Ignored when --resume finds a checkpoint of this run.
    init_from: str | None = None
    # Stop with a checkpoint after this many minutes in the training loop (a job's time limit);
    # --resume auto continues. None: no limit.
    max_minutes: Annotated[float | None, POSITIVE] = None
    # Train for about this many minutes of the training loop in all (over resumed calls): after
    # timing the first steps, train.steps is cut to the step the measured speed reaches when the
    # budget is spent, so a cosine schedule ends on time (train.steps stays the upper bound;
    # the plan is kept in the checkpoint for resumed calls that keep a budget). None: train.steps.
    budget_minutes: Annotated[float | None, POSITIVE] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cuda_graphs and self.compile is False:
            raise ConfigError(
                "train.cuda_graphs replays the compiled network: set train.compile to true or "
                "null (on for CUDA), got false"
            )
        if self.batch_size % self.grad_accum:
            raise ConfigError(
                f"train.batch_size must be divisible by train.grad_accum={self.grad_accum}, "
                f"got {self.batch_size!r}"
            )


FEATURE_WEIGHTS = Check(
    lambda v: 1 <= len(v) <= 5 and all(w >= 0 for w in v) and any(w > 0 for w in v),
    "must list 1 to 5 weights >= 0 (VGG16 conv1_2, conv2_2, conv3_3, conv4_3, conv5_3), "
    "not all zero",
)


@dataclass
class PerceptualConfig(Checked):
    """The perceptual stage: a trained diffusion network fine-tuned into a one-call generator.

    The generator is the network at the top timestep (the posterior mean's call, with the same
    noise input), trained with a pixel loss, a VGG16 feature loss and an adversarial loss from a
    U-Net discriminator with spectral norm (Wang et al. 2021, Real-ESRGAN; Xia et al. 2023,
    DiffIR). Its EMA weights are the ``perceptual`` estimate; the diffusion weights it started
    from ride along unchanged, so the run still serves ``mean`` and ``sample``.
    """

    SECTION: ClassVar[str] = "perceptual"
    # true: this run is a perceptual stage (needs train.init_from, a trained diffusion run)
    enabled: bool = False
    pixel_weight: Annotated[float, NON_NEGATIVE] = 1.0  # L1 on [0, 1] images
    feature_weight: Annotated[float, NON_NEGATIVE] = 1.0  # L1 between VGG16 features
    # the feature loss per VGG16 layer (before ReLU): conv1_2, conv2_2, conv3_3, conv4_3, conv5_3;
    # the list's length is how deep the network runs (Real-ESRGAN's 0.1, 0.1, 1, 1, 1 on VGG19)
    feature_layers: Annotated[tuple[float, ...], FEATURE_WEIGHTS] = (0.1, 0.1, 1.0, 1.0)
    # VGG16 weights (safetensors, fp32 or fp16; conv0..conv12): None = the file `condiff metrics
    # setup` writes in the cache. Never AlexNet-LPIPS, the metric the estimate is judged by.
    vgg_weights: str | None = None
    adversarial_weight: Annotated[float, NON_NEGATIVE] = 0.1  # the generator's GAN loss
    disc_channels: Annotated[int, COUNT] = 64  # the discriminator's first width
    disc_lr: Annotated[float, POSITIVE] = 1e-4
    disc_betas: Annotated[
        tuple[float, float], Check(lambda v: all(0 <= b < 1 for b in v), "must be in [0, 1)")
    ] = (0.9, 0.99)


@dataclass
class SampleConfig(Checked):
    """Default sampling settings stored with a run (the CLI can override each)."""

    SECTION: ClassVar[str] = "sample"
    sampler: SamplerName = "dpmpp_2m"
    steps: Annotated[int, COUNT] = 20
    # stochasticity: 0 deterministic, 1 ancestral (ddim, ddpm, dpmpp_2m_sde); None: the
    # sampler's own default (ddim 0, dpmpp_2m_sde 1)
    eta: Annotated[float | None, NON_NEGATIVE] = None
    spacing: Spacing = "trailing"
    clip: bool = True  # clip x0 predictions to [-1, 1]
    # percentile in (0, 1), e.g. 0.995 (Imagen); None = off
    dynamic_threshold: Annotated[float | None, OPEN_UNIT] = None
    # classifier-free guidance weight w (0 = off): (1 + w) * pred(cond) - w * pred(no cond);
    # needs a model trained with diffusion.cond_drop_prob > 0
    guidance: Annotated[float, NON_NEGATIVE] = 0.0


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    perceptual: PerceptualConfig = field(default_factory=PerceptualConfig)

    def __post_init__(self) -> None:
        if self.data.kind == "shards" and not self.data.shards:
            raise ConfigError(
                "data.shards is required with data.kind: shards (the shards.json of "
                "`condiff data pack`, or its folder or URL)"
            )
        m = self.model.size_multiple
        if self.data.crop_size % m:
            raise ConfigError(
                f"data.crop_size must be a multiple of {m} for this network (it halves the image "
                f"{len(self.model.channel_mults) - 1} times: model.channel_mults has "
                f"{len(self.model.channel_mults)} levels), got {self.data.crop_size}"
            )

    @property
    def noise_map(self) -> bool:
        """Whether the model's condition ends with a noise-level map (a denoiser trained with
        ``data.task.noise_map``): it must be told each input's noise level."""
        return self.data.kind == "task" and self.data.task.noise_map

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
            f"unknown config field(s) {sorted(prefix + str(k) for k in unknown)}; "
            f"valid fields here: {sorted(known)}"
        )
    kwargs: dict[str, Any] = {}
    if cls is ModelConfig and d.get("preset"):
        from condiff.nn.presets import preset_kwargs

        if not isinstance(d["preset"], str):
            raise ConfigError(f"{prefix}preset must be a preset name, got {d['preset']!r}")
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
    try:
        with path.open() as f:
            raw = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}:{where} not valid YAML ({problem})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    if not raw:  # e.g. a copy cut short inside its header comments: never train on defaults
        raise ConfigError(
            f"{path}: no settings (the file is empty or holds only comments); expected the "
            f"sections {', '.join(f.name for f in dataclasses.fields(RunConfig))} (see configs/)"
        )
    raw = apply_overrides(raw, overrides or [])
    try:
        return RunConfig.from_dict(raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``["train.lr=1e-4", "data.task.factor=8"]`` -> nested updates (values parsed as YAML).

    ``model.preset=NAME`` starts the model section afresh from that preset (a saved YAML spells
    out every model field, which would otherwise override the preset); ``model.*`` overrides
    after it still apply.
    """
    raw = copy.deepcopy(raw)  # YAML may hold dates, bytes or aliases: not JSON
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.field=value")
        key, value = item.split("=", 1)
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as e:
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise ConfigError(
                f"override {item!r}: the value is not valid YAML ({problem})"
            ) from None
        if key.strip() == "model.preset":
            raw["model"] = {"preset": parsed}
            continue
        parts = key.strip().split(".")
        node = raw
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p} is not a section")
        node[parts[-1]] = parsed
    return raw


def save_config(cfg: RunConfig, path: str | Path) -> None:
    """Written beside ``path`` and renamed in: never a zero-byte ``config.yaml`` on a full disk."""
    from condiff.files import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
