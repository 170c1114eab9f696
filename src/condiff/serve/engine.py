"""What the server runs: request options, an uploaded image made into a job, and a batch of jobs
through one pipeline (torch or ONNX Runtime), with each job's noise drawn from its own seed so a
response does not depend on which requests it was batched with, and equals ``condiff sample``'s
output for the same image, options and seed.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from condiff.data.io import (
    encode_image,
    estimate_noise_level,
    probe_image,
    read_image,
    with_noise_map_np,
)
from condiff.diffusion.samplers import SAMPLERS
from condiff.infer.graphs import DETERMINISTIC
from condiff.infer.outputs import STD_SCALE
from condiff.infer.progress import Cancelled, Progress
from condiff.infer.run import resize_bicubic_np

# all: baseline, mean, the perceptual estimate (where the model has one), samples and their std
ESTIMATES = ("sample", "mean", "perceptual", "all")


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; beyond these it is refused (422 / 413)."""

    max_steps: int = 200
    max_samples: int = 16
    max_upscale: int = 8
    max_pixels: int = 4096 * 4096  # after upscaling; larger uploads are refused before decoding


@dataclass(frozen=True)
class Options:
    estimate: str = "sample"
    sampler: str = "dpmpp_2m"
    steps: int = 20
    seed: int = 0
    num_samples: int = 1
    upscale: int = 1
    # image: the estimate as `condiff sample` writes it (PNG; 16-bit TIFF for 16-bit input);
    # json: every output as base64 PNG
    format: str = "image"
    # a denoiser trained with data.task.noise_map: the upload's noise std on the 0-255 scale,
    # or "auto" (estimated from the upload); required there, refused for any other model
    noise_level: float | str | None = None


class OptionError(ValueError):
    """A request option is missing its mark; the message names the option."""


def _int(raw: dict[str, str], name: str, default: int, lo: int, hi: int) -> int:
    value = raw.get(name)
    if value in (None, ""):
        return default
    try:
        v = int(str(value))
    except ValueError:
        raise OptionError(f"{name} must be an integer, got {value!r}") from None
    if not lo <= v <= hi:
        raise OptionError(f"{name} must be in {lo}..{hi}, got {v}")
    return v


def _choice(raw: dict[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = raw.get(name) or default
    if value not in choices:
        raise OptionError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def _level(raw: dict[str, str]) -> float | str | None:
    value = raw.get("noise_level")
    if value in (None, ""):
        return None
    if value == "auto":
        return "auto"
    try:
        v = float(str(value))
    except ValueError:
        raise OptionError(f"noise_level must be a number or 'auto', got {value!r}") from None
    if not 0 <= v <= 255:  # also refuses nan
        raise OptionError(f"noise_level must be in [0, 255] (the 0-255 scale), got {value}")
    return v


def parse_options(raw: dict[str, str], defaults: Options, limits: Limits) -> Options:
    """Options from query parameters and form fields (strings), checked against ``limits``."""
    known = {f for f in Options.__dataclass_fields__}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise OptionError(f"unknown option(s) {unknown}; known: {sorted(known)}")
    return Options(
        estimate=_choice(raw, "estimate", defaults.estimate, ESTIMATES),
        sampler=_choice(raw, "sampler", defaults.sampler, tuple(sorted(SAMPLERS))),
        steps=_int(raw, "steps", defaults.steps, 1, limits.max_steps),
        seed=_int(raw, "seed", defaults.seed, 0, 2**63 - 1),
        num_samples=_int(raw, "num_samples", defaults.num_samples, 1, limits.max_samples),
        upscale=_int(raw, "upscale", defaults.upscale, 1, limits.max_upscale),
        format=_choice(raw, "format", defaults.format, ("image", "json")),
        noise_level=_level(raw),
    )


# Jobs compare by identity: field equality compares their arrays and raises, as deque.remove()
# in the batcher did once two jobs waited (found by fuzzing: the worker died, the server hung).
@dataclass(eq=False)
class Job:
    cond: np.ndarray  # (C, H, W) in [-1, 1]
    bit_depth: int
    opts: Options
    batchable: bool  # deterministic sampler: may share a network call with other jobs
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    state: str = "queued"  # queued, running, done, error, cancelled (client gone), cut (drain)
    progress: str = ""  # e.g. "sample: step 7/20, tile 3/12"
    stop: str = ""  # why the job must stop: "cancelled" or "cut"; "" = go on
    # the level the model was given (noise_level="auto": the upload's estimate)
    noise_level: float | None = None

    @property
    def stopped(self) -> bool:
        return bool(self.stop)

    @property
    def key(self) -> tuple:
        """Jobs with equal keys can run as one batch."""
        o = self.opts
        shape = self.cond.shape
        base = (shape, o.estimate, o.sampler, o.steps, o.num_samples)
        return base if self.batchable else (*base, id(self))


@dataclass
class Result:
    outputs: dict[str, list[np.ndarray]] = field(default_factory=dict)  # name -> (H, W, C) [0, 1]
    bit_depth: int = 8
    nfe: int = 0

    def main(self) -> np.ndarray:
        """The image the PNG response carries: the mean, the perceptual estimate, or the first
        sample (whichever was asked, in that order)."""
        for name in ("mean", "perceptual", "sample"):
            if self.outputs.get(name):
                return self.outputs[name][0]
        raise KeyError("no estimate in this result")

    def file(self) -> tuple[bytes, str]:
        """The main image as `condiff sample` writes it: PNG, or 16-bit TIFF for 16-bit input."""
        if self.bit_depth == 16:
            return encode_image(self.main(), 16, "TIFF"), "image/tiff"
        return encode_image(self.main(), 8, "PNG"), "image/png"

    def pngs(self) -> dict[str, list[bytes]]:
        """Every output as PNG a browser shows (16-bit gray stays 16-bit; std maps 8-bit)."""
        depth = {k: (8 if k == "std" else self.bit_depth) for k in self.outputs}
        return {
            k: [encode_image(x, depth[k] if x.shape[2] == 1 else 8, "PNG") for x in v]
            for k, v in self.outputs.items()
        }


class Translator:
    """A loaded model behind the server: ``prepare`` checks an upload, ``run`` does a batch."""

    def __init__(
        self,
        checkpoint: str | Path | None = None,
        *,
        engine: str = "torch",
        onnx_model: str | Path | None = None,
        device: str = "auto",
        dtype: str | None = None,
        compile: bool | None = None,
        graphs: bool | None = None,
        limits: Limits | None = None,
        bucket: bool | None = None,
    ) -> None:
        self.engine = engine
        self.limits = limits or Limits()
        if engine == "onnxruntime":
            if onnx_model is None:
                raise ValueError("--engine onnxruntime needs --model FILE.onnx")
            from condiff.export.runtime import OrtPipeline

            self.pipe: Any = OrtPipeline(onnx_model)
            self.torch = False
        elif engine == "torch":
            if checkpoint is None:
                raise ValueError("--checkpoint is required with the torch engine")
            from condiff.infer.pipeline import load, resolve_device
            from condiff.infer.run import default_dtype

            dev = resolve_device(device)
            self.pipe = load(
                checkpoint,
                device=dev,
                dtype=dtype or default_dtype(dev),
                compile=compile,
                graphs=graphs,
            )
            self.torch = True
        else:
            raise ValueError(f"unknown engine {engine!r}; expected 'torch' or 'onnxruntime'")
        self.cfg = self.pipe.cfg
        # a sampler cannot take more steps than the schedule has: refused (422), never a 500
        t_max = self.cfg.diffusion.num_timesteps
        if self.limits.max_steps > t_max:
            self.limits = replace(self.limits, max_steps=t_max)
        # Pad each batch to a power of two where sampling replays CUDA graphs: one graph per
        # (shape, batch size), so at most log2(max batch) + 1 captures per image shape instead of
        # one per batch size seen (each first seen twice eagerly, then captured).
        self.bucket = getattr(self.pipe, "graphs", False) if bucket is None else bucket
        self.cond_channels = self.pipe.cond_channels
        self.target_channels = self.pipe.target_channels
        # a denoiser told the noise level: the upload plus its map (the request's noise_level)
        self.noise_map = self.cfg.noise_map
        image_channels = self.cond_channels - self.noise_map
        if image_channels not in (1, 3):
            raise ValueError(
                f"this model's condition has {self.cond_channels} channels; the server reads "
                "gray (1) or RGB (3) images (plus a noise-level map for a denoiser trained "
                "with one)"
            )
        self.color = "gray" if image_channels == 1 else "rgb"
        sc = self.cfg.sample
        # the page's defaults: the fast, faithful mean, at the model's own upscale (a 4x SR
        # model's uploads are low-resolution); /v1/model lists them
        self.defaults = Options(
            estimate="mean",
            sampler=sc.sampler,
            steps=min(sc.steps, self.limits.max_steps),
            upscale=self.default_upscale(),
        )
        # the estimates this model gives (a perceptual stage adds "perceptual")
        self.estimates: tuple[str, ...] = getattr(self.pipe, "estimates", ("sample", "mean"))

    def default_upscale(self) -> int:
        """The model's own super-resolution factor (uploads are low-resolution), else 1."""
        data = self.cfg.data
        if data.kind == "task" and data.task.name == "super_resolution":
            return min(data.task.factor, self.limits.max_upscale)
        return 1

    def describe(self) -> dict[str, Any]:
        task = self.cfg.data.task
        return {
            "engine": self.engine,
            "task": task.name if self.cfg.data.kind == "task" else "paired",
            "default_upscale": self.default_upscale(),
            "cond_channels": self.cond_channels,
            "noise_map": self.noise_map,
            "target_channels": self.target_channels,
            "color": self.color,
            "size_multiple": self.pipe.size_multiple,
            "window": self.pipe.window,
            "defaults": self.defaults.__dict__,
            "estimates": list(self.estimates),
            "limits": self.limits.__dict__,
            "config": self.cfg.to_dict(),
        }

    def prepare(self, data: bytes, opts: Options) -> Job:
        """Check and decode an upload (ImageTooLarge / ImageError name the problem)."""
        if opts.estimate not in (*self.estimates, "all"):
            raise OptionError(
                f"estimate {opts.estimate!r}: this model gives {list(self.estimates)} (the "
                "perceptual estimate needs a run with a perceptual stage)"
            )
        if self.noise_map and opts.noise_level is None:
            raise OptionError(
                "noise_level is required: this denoiser was trained with a noise-level map; "
                "give the upload's noise std on the 0-255 scale (e.g. 25), or 'auto'"
            )
        if not self.noise_map and opts.noise_level is not None:
            raise OptionError(
                "noise_level is for a denoiser trained with data.task.noise_map; this model "
                "takes none: leave it out"
            )
        lim = self.limits
        probe_image(data, max_pixels=lim.max_pixels // (opts.upscale * opts.upscale))
        x, depth = read_image(data, self.color)
        c = x.transpose(2, 0, 1) * 2 - 1  # (C, H, W) in [-1, 1]
        if opts.upscale > 1:
            size = (c.shape[1] * opts.upscale, c.shape[2] * opts.upscale)
            c = np.clip(resize_bicubic_np(c, size), -1, 1)
        level = None
        if opts.noise_level is not None:  # the noise-level map, as in training
            if opts.noise_level != "auto":
                level = float(opts.noise_level)
            else:
                try:  # the estimator's own refusal (an upload under 3x3) is a 422
                    level = estimate_noise_level(c)
                except ValueError as e:
                    raise OptionError(f"noise_level=auto: {e}") from None
            c = with_noise_map_np(c, level)
        eta_free = opts.sampler != "ddim" or not self.cfg.sample.eta
        batchable = opts.estimate != "all" and opts.sampler in DETERMINISTIC and eta_free
        return Job(c.astype(np.float32), depth, opts, batchable, noise_level=level)

    def warmup(
        self, size: tuple[int, int], max_batch: int, estimates: tuple[str, ...] = ("sample", "mean")
    ) -> list[int]:
        """Run blank batches of ``size`` (H, W, after any upscale) with the default options.

        Every batch size a request batch can become (powers of two up to ``max_batch`` where
        batches are padded, else 1 and ``max_batch``) runs twice, so compilation and CUDA graph
        capture (done on a shape's second call) happen before the first request. Returns the
        batch sizes run.
        """
        max_batch = max(max_batch, 1)
        if self.bucket:  # what run() pads a batch of 1..max_batch to
            sizes = sorted({self.padded_size(n) for n in range(1, max_batch + 1)})
        else:
            sizes = sorted({1, max_batch})
        cond = np.zeros((self.cond_channels, *size), np.float32)
        for est in estimates:
            job = Job(cond, 8, replace(self.defaults, estimate=est), batchable=True)
            for n in sizes:
                for _ in range(2):
                    self.run([job] * n)
        return sizes

    def _noise(self, n: int, shape: tuple[int, ...], seed: int):
        """The starting noise ``condiff sample --seed`` draws for one image: (n, C, H', W')."""
        if not self.torch:
            return np.random.default_rng(seed).standard_normal((n, *shape), dtype=np.float32)
        import torch

        from condiff.diffusion.denoiser import randn

        dev = self.pipe.device
        return randn((n, *shape), torch.Generator(dev).manual_seed(seed), dev)

    def _call(self, conds: np.ndarray, noise: list, **opts: Any) -> np.ndarray:
        if not self.torch:
            return self.pipe(conds, noise=np.concatenate(noise), **opts)
        import torch

        with torch.inference_mode():
            out = self.pipe(torch.from_numpy(conds), noise=torch.cat(noise), **opts)
        return out.float().cpu().numpy()

    @staticmethod
    def _watch(jobs: list[Job], phase: str):
        """The progress callback of one pipeline call: record where the batch is on each job,
        and stop (Cancelled) once every job of the batch has been told to stop."""

        def tick(p: Progress) -> None:
            for j in jobs:
                j.progress = f"{phase}: {p}"
            if all(j.stopped for j in jobs):
                raise Cancelled(jobs[0].stop)

        return tick

    def run(self, jobs: list[Job]) -> list[Result]:
        """One batch of jobs with equal keys (or a single job).

        With ``bucket``, the batch is padded to a power of two by repeating its last job (rows
        are computed independently; the padding's results are dropped).
        """
        n = len(jobs)
        if self.bucket:
            jobs = jobs + [jobs[-1]] * (self.padded_size(n) - n)
        return self._run(jobs)[:n]

    @staticmethod
    def padded_size(n: int) -> int:
        """The power of two a batch of ``n`` jobs is padded to (with ``bucket``)."""
        return 1 << (n - 1).bit_length()

    def _run(self, jobs: list[Job]) -> list[Result]:
        from condiff.diffusion.samplers import network_calls

        o = jobs[0].opts
        conds = np.stack([j.cond for j in jobs])  # (B, C, H, W)
        m = self.pipe.size_multiple
        shape = (self.target_channels, *(-(-s // m) * m for s in conds.shape[-2:]))
        results = [Result(bit_depth=j.bit_depth) for j in jobs]

        def put(name: str, arr: np.ndarray) -> None:
            """``arr`` (B, [K,] C, H, W) in [0, 1] -> each result's list of (H, W, C)."""
            for r, a in zip(results, np.clip(arr, 0, 1), strict=True):
                r.outputs[name] = [x.transpose(1, 2, 0) for x in (a if a.ndim == 4 else a[None])]

        def sample(k: int, estimate: str) -> np.ndarray:
            noise = [self._noise(k, shape, j.opts.seed) for j in jobs]
            tick = self._watch(jobs, "mean" if estimate == "mean" and k == 1 else "sample")
            out = self._call(
                conds,
                noise,
                estimate=estimate,
                sampler=o.sampler,
                steps=o.steps,
                num_samples=k,
                callback=tick,
            )
            return (out + 1) / 2  # (B, [K,] C, H, W) in [0, 1]

        calls = 0
        if o.estimate == "mean" and o.num_samples > 1:  # the average of K samples
            put("mean", sample(o.num_samples, "sample").mean(1))
            calls += o.num_samples * network_calls(o.sampler, o.steps)
        elif o.estimate in ("mean", "all"):  # one network call
            put("mean", sample(1, "mean"))
            calls += 1
        if o.estimate == "perceptual" or (o.estimate == "all" and "perceptual" in self.estimates):
            k = o.num_samples if o.estimate == "perceptual" else 1
            put("perceptual", sample(k, "perceptual"))  # one call each
            calls += k
        if o.estimate in ("sample", "all"):
            k = o.num_samples if o.estimate == "sample" else max(o.num_samples, 2)
            smp = sample(k, "sample")
            put("sample", smp)
            if k > 1:
                put("std", smp.std(1) * STD_SCALE)
            calls += k * network_calls(o.sampler, o.steps)
        if o.estimate == "all":
            tc = self.target_channels
            base = conds[:, :tc] if conds.shape[1] >= tc else np.repeat(conds[:, :1], tc, axis=1)
            put("baseline", (base + 1) / 2)
        for r in results:
            r.nfe = calls
        return results
