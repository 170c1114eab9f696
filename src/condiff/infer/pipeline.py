"""``condiff.load()``: a ready-to-run conditional sampler from a run or checkpoint folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from condiff import checkpoint as ckpt
from condiff.config import RunConfig
from condiff.diffusion import NoiseSchedule, make_denoiser
from condiff.diffusion.denoiser import randn
from condiff.diffusion.objectives import batched_condition, decode_target
from condiff.diffusion.samplers import ESTIMATES, estimate_plan, get_sampler, network_calls
from condiff.infer.graphs import DETERMINISTIC, GraphedSampler
from condiff.infer.outputs import refuse_nonfinite
from condiff.infer.progress import Bar, Callback, Counted, Progress, chain
from condiff.infer.tiling import TiledModel, pad_to_multiple
from condiff.nn import ConditionalUNet
from condiff.nn.compiled import compile_module
from condiff.nn.precision import autocast_ctx, autocast_dtype

PERCEPTUAL_FILE = "perceptual.safetensors"  # a perceptual stage's generator (its EMA weights)


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Pipeline:
    """Samples targets for condition images with a trained network and its schedule."""

    def __init__(
        self,
        model: ConditionalUNet | Callable[[Tensor, Tensor], Tensor],
        cfg: RunConfig,
        *,
        device: torch.device,
        dtype: str = "fp32",
        source: Path | None = None,
        compile: bool | None = None,
        graphs: bool | None = None,
        perceptual: ConditionalUNet | Callable[[Tensor, Tensor], Tensor] | None = None,
    ) -> None:
        cuda = device.type == "cuda"
        if not isinstance(model, torch.nn.Module):  # another engine (ONNX Runtime): a plain
            graphs = False  # callable, no compile or graphs
        compile = cuda if compile is None else compile
        self.model = model
        self.net: Callable[[Tensor, Tensor], Tensor] = _prepared(model, device, compile)
        # the perceptual stage's generator (the network at the top timestep, fine-tuned for
        # realism): the "perceptual" estimate; None where the run has no perceptual stage
        self.perceptual_net = None if perceptual is None else _prepared(perceptual, device, compile)
        self.graphs = cuda if graphs is None else graphs
        self._graphed: dict[tuple, GraphedSampler] = {}
        self._calls: dict[tuple, int] = {}
        self.cfg = cfg
        self.device = device
        self.dtype = dtype
        self.source = source
        d = cfg.diffusion
        self.schedule = NoiseSchedule.from_config(d)
        mc = cfg.model
        self.target_channels = mc.out_img_channels
        self.cond_channels = mc.cond_channels
        self.size_multiple = mc.size_multiple
        # The window the network saw in training: tiles larger inputs at that size, sharing
        # ``overlap`` pixels (window / 4 unless set), at most ``tile_batch`` windows a call.
        self.window = cfg.data.crop_size
        self.overlap = self.window // 4
        self.tile_batch = 512 if cuda else 16

    @property
    def estimates(self) -> tuple[str, ...]:
        """The estimates this model gives: mean and sample, and perceptual after that stage."""
        return ESTIMATES if self.perceptual_net is not None else ("sample", "mean")

    def _finish(
        self, out: Tensor, cond_k: Tensor, b: int, k: int, h: int, w: int, mean: bool
    ) -> Tensor:
        d = self.cfg.diffusion
        out = decode_target(out, cond_k, residual=d.residual, scale=d.target_scale)
        out = out[:, :, :h, :w]
        refuse_nonfinite(int(out.numel() - torch.isfinite(out).sum()))  # never a black image
        out = out.clamp(-1, 1)
        if k == 1:
            return out
        out = out.view(b, k, *out.shape[1:])
        return out.mean(1) if mean else out

    def _graph_key(
        self,
        cond_k: Tensor,
        sampler: str,
        steps: int,
        spacing: str,
        overlap: int,
        eta: float | None,
        estimate: str,
        guidance: float = 0.0,
    ) -> tuple | None:
        """The CUDA-graph cache key of a call (None where graphs do not apply); counts calls:
        a graph is captured on the second call with the same shapes (a one-off image is cheaper
        to run eagerly than to warm up, capture and replay once)."""
        if not (
            self.graphs
            and self.device.type == "cuda"
            and sampler in DETERMINISTIC
            and (sampler != "ddim" or not eta)
            and self.cfg.sample.dynamic_threshold is None
            and not guidance  # a guided call runs a doubled batch, eagerly
        ):
            return None
        perceptual = estimate == "perceptual"
        key = (tuple(cond_k.shape), sampler, steps, spacing, self.window, overlap, perceptual)
        self._calls[key] = self._calls.get(key, 0) + 1
        return key

    def _graphed_run(
        self, key: tuple, net, cond_k: Tensor, x_T: Tensor, sampler: str, steps: int, spacing: str
    ) -> Tensor:
        if key not in self._graphed:
            self._graphed[key] = GraphedSampler(
                net,
                self.schedule,
                cond_k,
                x_T,
                sampler=sampler,
                steps=steps,
                objective=self.cfg.diffusion.objective,
                spacing=spacing,
                clip=self.cfg.sample.clip,
                clip_value=self.cfg.diffusion.target_scale,
                autocast_dtype=autocast_dtype(self.dtype),
            )
        return self._graphed[key](cond_k, x_T)

    def _guidance(self, w: float, estimate: str) -> float:
        """The guidance weight of a call, refused where the network never saw a dropped
        condition (it would extrapolate away from an input it was not trained on)."""
        if w < 0:
            raise ValueError(f"guidance must be >= 0, got {w}")
        if w and estimate == "perceptual":
            raise ValueError(
                "guidance applies to the diffusion estimates (sample, mean), not to perceptual"
            )
        if w and self.cfg.diffusion.cond_drop_prob == 0:
            raise ValueError(
                f"guidance {w} needs a model trained with the condition dropped "
                "(diffusion.cond_drop_prob > 0, e.g. 0.1); this one was trained with 0"
            )
        return float(w)

    @torch.no_grad()
    def __call__(
        self,
        cond: Tensor,
        *,
        estimate: str = "sample",
        sampler: str | None = None,
        steps: int | None = None,
        num_samples: int = 1,
        eta: float | None = None,
        generator: torch.Generator | None = None,
        overlap: int | None = None,
        guidance: float | None = None,
        progress: bool = False,
        noise: Tensor | None = None,
        callback: Callback | None = None,
    ) -> Tensor:
        """``cond`` ``(B, C_cond, H, W)`` in [-1, 1], any H and W -> estimates in [-1, 1].

        ``estimate="sample"``: posterior samples (the perceptual choice), ``(B, C, H, W)``, or
        ``(B, K, C, H, W)`` when ``num_samples=K > 1``. ``estimate="mean"``: the posterior mean
        (the minimum-MSE choice), ``(B, C, H, W)``: one network call, or the average of
        ``num_samples`` samples (see :func:`condiff.diffusion.samplers.estimate_plan`). Inputs
        larger than the training window run as overlapping tiles (``overlap`` defaults to
        ``self.overlap``, window / 4). ``noise``: the starting noise ``(B*K, C, H', W')`` at the
        padded size, instead of drawing it from ``generator`` (the server draws it per request).
        ``callback(Progress)``: called before each network call and after each chunk of tiles;
        raising :class:`condiff.infer.progress.Cancelled` stops the run (a CUDA-graph replay
        runs whole: the callback sees its start and its end). ``guidance``: see ``_guidance``.
        """
        cond = batched_condition(cond, self.cond_channels)
        sc = self.cfg.sample
        sampler, steps, spacing = estimate_plan(
            estimate, sampler or sc.sampler, steps or sc.steps, sc.spacing, num_samples
        )
        network = self.net
        if estimate == "perceptual":
            if self.perceptual_net is None:
                raise ValueError(
                    "this model has no perceptual estimate: train a perceptual stage from it "
                    "(perceptual.enabled, e.g. configs/sr4-rgb-perceptual.yaml); it has "
                    f"{list(self.estimates)}"
                )
            network = self.perceptual_net
        mean = estimate == "mean"
        eta = sc.eta if eta is None else eta
        cfg_w = self._guidance(sc.guidance if guidance is None else guidance, estimate)
        fn = get_sampler(sampler)
        b = cond.shape[0]
        cond = cond.to(self.device, torch.float32)
        padded, (h, w) = pad_to_multiple(cond, self.size_multiple)
        overlap = self.overlap if overlap is None else overlap
        net = TiledModel(network, self.window, overlap, max_batch=self.tile_batch)
        cond_k = padded.repeat_interleave(num_samples, dim=0)  # (B*K, C, H', W')
        shape = (b * num_samples, self.target_channels, *padded.shape[-2:])
        if noise is None:
            x_T = randn(shape, generator, self.device)
        elif tuple(noise.shape) != shape:
            raise ValueError(f"noise has shape {tuple(noise.shape)}, expected {shape}")
        else:
            x_T = noise.to(self.device, torch.float32)
        calls = network_calls(sampler, steps)
        bar = _bar(estimate, sampler, steps, calls) if progress else None
        callback = chain(bar, callback)
        try:
            key = self._graph_key(cond_k, sampler, steps, spacing, overlap, eta, estimate, cfg_w)
            if key is not None and (key in self._graphed or self._calls[key] >= 2):
                if callback is not None:
                    callback(Progress(0, calls))
                out = self._graphed_run(key, net, cond_k, x_T, sampler, steps, spacing)
                if callback is not None:
                    callback(Progress(calls, calls))
                return self._finish(out, cond_k, b, num_samples, h, w, mean)
            if callback is not None:
                net = Counted(net, calls, callback)
            timesteps = self.schedule.timesteps(steps, spacing)
            denoise = make_denoiser(
                net,
                cond_k,
                self.schedule,
                objective=self.cfg.diffusion.objective,
                clip=sc.clip,
                clip_value=self.cfg.diffusion.target_scale,
                dynamic_threshold_percentile=sc.dynamic_threshold,
                dtype=torch.float32,
                guidance=cfg_w,
            )
            with autocast_ctx(self.dtype, self.device):
                out = fn(
                    denoise,
                    x_T,
                    self.schedule,
                    timesteps,
                    generator=generator,
                    progress=False,  # the bar below counts calls and tiles
                    eta=eta,  # None: the sampler's own default
                )
            return self._finish(out, cond_k, b, num_samples, h, w, mean)
        finally:
            if bar is not None:
                bar.close()


def _bar(estimate: str, sampler: str, steps: int, calls: int) -> Bar:
    """The progress bar of one run, named for what it computes ("mean", "perceptual", or the
    sampler and its steps: never "ddim 0/1" for a one-call mean)."""
    label = estimate
    if calls > 1:
        label = f"{'mean of samples' if estimate == 'mean' else 'sample'}: {sampler} {steps} steps"
    return Bar(label, calls)


def load(
    path: str | Path,
    *,
    device: str | torch.device | None = "auto",
    dtype: str = "fp32",
    use_ema: bool = True,
    compile: bool | None = None,
    graphs: bool | None = None,
) -> Pipeline:
    """Load a run folder (its newest whole checkpoint) or a checkpoint folder.

    Reads only ``config.json`` and ``*.safetensors`` (no pickle); a missing, truncated or
    mismatched file is a ``CheckpointError`` naming it.
    """
    path = Path(path)
    folder = ckpt.resolve_checkpoint(path, need_state=False)
    raw = ckpt.read_config(folder)
    raw.pop("checkpoint", None)
    cfg = RunConfig.from_dict(raw)
    model = ConditionalUNet(**cfg.model.network_kwargs())
    ckpt.load_weights(model, ckpt.weights_file(folder, use_ema))
    perceptual = None
    if (folder / PERCEPTUAL_FILE).is_file():
        perceptual = ConditionalUNet(**cfg.model.network_kwargs())
        ckpt.load_weights(perceptual, folder / PERCEPTUAL_FILE)
    return Pipeline(
        model,
        cfg,
        device=resolve_device(device),
        dtype=dtype,
        source=folder,
        compile=compile,
        graphs=graphs,
        perceptual=perceptual,
    )


def _prepared(model, device: torch.device, compile: bool):
    """A network ready to run: on ``device`` in eval mode, channels-last and compiled on CUDA
    (by default); another engine's callable as it is."""
    if not isinstance(model, torch.nn.Module):
        return model
    model = model.to(device).eval()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    # On CUDA by default: torch.compile of the network, and one CUDA graph per sampling
    # configuration (shape, sampler, steps) replayed for every batch of that shape.
    return compile_module(model) if compile else model
