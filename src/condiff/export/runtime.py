"""Sampling from an exported model with numpy and ONNX Runtime only: no torch needed.

``OrtPipeline(model.onnx)`` reads ``model.json`` (written by ``condiff export``) for the schedule,
objective and sampling defaults, and runs the same samplers (:mod:`condiff.diffusion.samplers`)
and the same tiling (:mod:`condiff.infer.tiling`) as the PyTorch pipeline, on numpy arrays, with
ONNX Runtime doing the network calls. Noise comes from ``numpy.random.Generator``, so samples
differ from the PyTorch engine's for the same seed; with the same starting noise they agree
within float tolerance (tested).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from condiff.config import RunConfig
from condiff.diffusion.objectives import (
    batched_condition,
    concat_condition,
    decode_target,
    to_x0,
)
from condiff.diffusion.samplers import estimate_plan, get_sampler, network_calls
from condiff.diffusion.schedule import NoiseSchedule, spaced_timesteps
from condiff.infer.outputs import refuse_nonfinite
from condiff.infer.progress import Callback, Counted
from condiff.infer.run import CondLayout
from condiff.infer.tiling import TiledModel, pad_to_multiple


def dynamic_threshold_np(x0: np.ndarray, percentile: float) -> np.ndarray:
    """numpy twin of :func:`condiff.diffusion.denoiser.dynamic_threshold`."""
    s = np.quantile(np.abs(x0).reshape(len(x0), -1), percentile, axis=1).clip(min=1.0)
    s = s.astype(np.float32).reshape(-1, 1, 1, 1)
    return np.clip(x0, -s, s) / s


class OrtPipeline:
    """An exported network in ONNX Runtime plus the samplers on numpy: ``(B, C, H, W)`` in
    [-1, 1] -> samples in [-1, 1], any size (tiled beyond the training window)."""

    def __init__(self, path: str | Path, *, threads: int | None = None) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: ONNX model not found")
        meta = path.with_suffix(".json")
        if not meta.is_file():
            raise FileNotFoundError(f"{meta}: the config written beside the ONNX model is missing")
        raw = json.loads(meta.read_text())
        # which network the file holds: the diffusion network (mean and sample), or a
        # perceptual stage's generator (the perceptual estimate)
        self.network_kind = (raw.pop("checkpoint", None) or {}).get("network", "diffusion")
        self.cfg = RunConfig.from_dict(raw)
        self.source = path
        perceptual = self.network_kind == "perceptual"
        self.estimates: tuple[str, ...] = ("perceptual",) if perceptual else ("sample", "mean")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        d, mc = self.cfg.diffusion, self.cfg.model
        self.schedule = NoiseSchedule.from_config(d)
        self.alphas_cumprod = self.schedule.alphas_cumprod_np.astype(np.float32)
        self.target_channels = mc.out_img_channels
        self.cond_channels = mc.cond_channels
        self.size_multiple = mc.size_multiple
        self.window = self.cfg.data.crop_size

    def network(self, x_concat: np.ndarray, t: np.ndarray) -> np.ndarray:
        feeds = {"x_concat": np.asarray(x_concat, np.float32), "time": np.asarray(t, np.int64)}
        return self.session.run(None, feeds)[0]

    def __call__(
        self,
        cond: np.ndarray,
        *,
        estimate: str = "sample",
        sampler: str | None = None,
        steps: int | None = None,
        num_samples: int = 1,
        eta: float | None = None,
        rng: np.random.Generator | int | None = None,
        overlap: int | None = None,
        progress: bool = False,
        noise: np.ndarray | None = None,
        callback: Callback | None = None,
    ) -> np.ndarray:
        """Returns ``(B, C, H, W)``, or ``(B, K, C, H, W)`` for ``num_samples=K > 1`` samples;
        ``estimate="mean"``: ``(B, C, H, W)``, as :meth:`condiff.infer.Pipeline.__call__`.

        ``rng``: a numpy Generator or a seed; ``noise``: the starting noise ``(B*K, C, H', W')``
        at the padded size, instead of drawing it. ``callback``: as the torch pipeline's.
        """
        cond = batched_condition(cond, self.cond_channels)
        if estimate not in self.estimates:
            raise ValueError(
                f"{self.source} holds the {self.network_kind} network: it gives "
                f"{list(self.estimates)}, not {estimate!r} (export the other with condiff "
                "export --network)"
            )
        sc, d = self.cfg.sample, self.cfg.diffusion
        sampler, steps, spacing = estimate_plan(
            estimate, sampler or sc.sampler, steps or sc.steps, sc.spacing, num_samples
        )
        eta = sc.eta if eta is None else eta
        fn = get_sampler(sampler)
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        b = cond.shape[0]
        padded, (h, w) = pad_to_multiple(cond.astype(np.float32), self.size_multiple)
        overlap = self.window // 4 if overlap is None else overlap
        net: TiledModel | Counted = TiledModel(self.network, self.window, overlap, max_batch=16)
        if callback is not None:
            net = Counted(net, network_calls(sampler, steps), callback)
        cond_k = np.repeat(padded, num_samples, axis=0)
        shape = (b * num_samples, self.target_channels, *padded.shape[-2:])
        if noise is None:
            noise = rng.standard_normal(shape, dtype=np.float32)
        elif noise.shape != shape:
            raise ValueError(f"noise has shape {noise.shape}, expected {shape}")

        def denoise(x_t: np.ndarray, t: np.ndarray) -> np.ndarray:
            pred = net(concat_condition(x_t, cond_k), t).astype(np.float32)
            x0 = to_x0(d.objective, pred, x_t, self.alphas_cumprod[t])
            if sc.dynamic_threshold is not None:
                return dynamic_threshold_np(x0, sc.dynamic_threshold)
            return np.clip(x0, -d.target_scale, d.target_scale) if sc.clip else x0

        timesteps = spaced_timesteps(self.schedule.num_timesteps, steps, spacing)
        out = fn(
            denoise,
            noise,
            self.schedule,
            timesteps,
            generator=rng,
            progress=progress,
            eta=eta,
        )
        out = decode_target(out, cond_k, residual=d.residual, scale=d.target_scale)[:, :, :h, :w]
        # NaN/Inf refused where it is made, as in the torch pipeline: never a black image
        refuse_nonfinite(int(out.size - np.isfinite(out).sum()))
        out = np.clip(out, -1, 1)
        if num_samples == 1:
            return out
        out = out.reshape(b, num_samples, *out.shape[1:])
        return out.mean(1) if estimate == "mean" else out


def ort_engine(
    model: str | Path | None, *, seed: int = 0, progress: bool = True, **opts: Any
) -> tuple[Callable[[np.ndarray, int], np.ndarray], CondLayout]:
    """(engine, condition layout) of an exported model for :func:`condiff.infer.run.sample_files`:
    batch ``i`` draws its noise from ``numpy.random.default_rng(seed + i)``."""
    if model is None:
        raise ValueError("--engine onnxruntime needs --model FILE.onnx (from condiff export)")
    pipe = OrtPipeline(model)

    def run(conds: np.ndarray, bi: int) -> np.ndarray:
        res = pipe(conds, rng=seed + bi, progress=progress, **opts)
        return res if res.ndim == 5 else res[:, None]

    return run, CondLayout.of(pipe.cfg)
