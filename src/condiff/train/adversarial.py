"""The perceptual stage: the diffusion network fine-tuned into a one-call generator.

The generator is the network at the top timestep, fed the same noise input as the posterior
mean's call: at step 0 its output *is* the posterior mean. Each optimizer step then

1. moves the generator down ``pixel_weight * L1 + feature_weight * VGG16 features +
   adversarial_weight * GAN`` (ESRGAN, Wang et al. 2018; Real-ESRGAN's weights 1, 1, 0.1), with
   the discriminator frozen;
2. moves the U-Net discriminator (:mod:`condiff.nn.discriminator`) down the standard GAN loss on
   the clean targets against the generator's outputs of step 1 (detached).

Noise and dropout are drawn from seeds that are pure functions of ``(seed, step, micro-step)``,
as in the diffusion step, so a resumed run continues bit for bit. The diffusion weights the stage
started from are carried unchanged into every checkpoint (``model`` / ``ema.safetensors``), so a
perceptual run still serves the mean and samples; the generator is ``generator.safetensors``
(raw) and ``perceptual.safetensors`` (its EMA: the estimate).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel as DDP

from condiff import checkpoint as ckpt
from condiff.config import RunConfig
from condiff.diffusion import NoiseSchedule
from condiff.diffusion.objectives import concat_condition, decode_target, encode_target, to_x0
from condiff.nn.discriminator import UNetDiscriminator
from condiff.nn.precision import autocast_ctx
from condiff.nn.vgg import load_vgg16
from condiff.train.step import (
    accumulating,
    backward,
    mix_seed,
    on_device,
    rank_slice,
    total_grad_norm,
    update,
)

# checkpoint files of a perceptual run, beside config.json, model/ema (diffusion) and state.pt
GENERATOR, PERCEPTUAL, DISCRIMINATOR = (
    "generator.safetensors",
    "perceptual.safetensors",
    "discriminator.safetensors",
)


def vgg_path(cfg: RunConfig) -> Path:
    """``perceptual.vgg_weights``, or the VGG16 file ``condiff metrics setup`` wrote."""
    if cfg.perceptual.vgg_weights:
        return Path(cfg.perceptual.vgg_weights)
    from condiff.evaluate.perceptual import FILES, cache_dir

    return cache_dir() / FILES["vgg16"]


def generate(net, cond: Tensor, z: Tensor, schedule: NoiseSchedule, cfg: RunConfig) -> Tensor:
    """The one-call estimate in image space: the x0 prediction at t = T-1 from ``[z, cond]``,
    decoded (residual, scale); unclipped, so gradients reach every pixel."""
    d = cfg.diffusion
    t = torch.full((z.shape[0],), schedule.num_timesteps - 1, device=z.device, dtype=torch.long)
    pred = net(concat_condition(z.to(cond.dtype), cond), t).float()
    x0 = to_x0(d.objective, pred, z, schedule.alpha_bar(t))
    return decode_target(x0, cond.float(), residual=d.residual, scale=d.target_scale)


class Adversarial:
    """The discriminator, its optimizer, the VGG16 features, and the frozen diffusion weights."""

    def __init__(self, cfg: RunConfig, device: torch.device, channels_last: bool) -> None:
        pc = cfg.perceptual
        self.cfg = cfg
        self.layer_weights = pc.feature_layers
        self.vgg = load_vgg16(vgg_path(cfg), len(pc.feature_layers)).to(device)
        self.disc = UNetDiscriminator(cfg.model.out_img_channels, pc.disc_channels).to(device)
        if channels_last:
            self.disc = self.disc.to(memory_format=torch.channels_last)
        fused = {"fused": True} if device.type == "cuda" else {}
        self.opt = torch.optim.Adam(
            self.disc.parameters(), lr=pc.disc_lr, betas=pc.disc_betas, **fused
        )
        self.disc_net: nn.Module = self.disc  # DDP-wrapped under torchrun
        # the diffusion weights the stage started from, written unchanged into each checkpoint
        self.frozen: dict[str, dict[str, Tensor]] = {}
        # the last step's loss terms (device tensors), read by the log once per window
        self.last: dict[str, Tensor] = {}

    def wrap(self, distributed: bool, device: torch.device) -> None:
        if distributed:
            ids = [device.index] if device.type == "cuda" else None
            self.disc_net = DDP(self.disc, device_ids=ids)

    # --- weights ------------------------------------------------------------------------------

    def init_from(self, folder: Path, model: nn.Module, ema_model: nn.Module) -> None:
        """Start the generator (and its EMA) from the diffusion run's EMA weights, and keep that
        run's weights to carry along."""
        self._keep_frozen(folder)
        ckpt.load_weights(model, ckpt.weights_file(folder, ema=True))
        ckpt.load_weights(ema_model, ckpt.weights_file(folder, ema=True))

    def restore(self, path: Path, state: dict) -> None:
        self._keep_frozen(path)
        ckpt.load_weights(self.disc, path / DISCRIMINATOR)
        self.opt.load_state_dict(state["disc_optimizer"])

    def _keep_frozen(self, folder: Path) -> None:
        """A checkpoint's diffusion weights (its EMA, or its only weights), kept to carry along."""
        self.frozen = {
            "model": ckpt.read_weights(folder / "model.safetensors"),
            "ema": ckpt.read_weights(ckpt.weights_file(folder, ema=True)),
        }

    def files(self, generator: nn.Module, ema_model: nn.Module) -> dict[str, nn.Module]:
        return {GENERATOR: generator, PERCEPTUAL: ema_model, DISCRIMINATOR: self.disc}

    # --- losses -------------------------------------------------------------------------------

    def generator_losses(self, fake: Tensor, real: Tensor) -> dict[str, Tensor]:
        """The generator's terms on [-1, 1] images (scored on [0, 1], as the literature's
        weights assume); the discriminator is in eval mode and takes no gradient."""
        pc = self.cfg.perceptual
        f01, r01 = (fake + 1) / 2, (real + 1) / 2
        out = {"pixel": (f01 - r01).abs().mean()}
        if pc.feature_weight > 0:
            with torch.no_grad():
                real_taps = self.vgg(r01)
            feat = fake.new_zeros(())
            for w, a, b in zip(self.layer_weights, self.vgg(f01), real_taps, strict=True):
                if w > 0:
                    feat = feat + w * (a.float() - b.float()).abs().mean()
            out["feature"] = feat
        if pc.adversarial_weight > 0:
            out["gan"] = F.softplus(-self.disc(fake).float()).mean()  # -log sigmoid(D(fake))
        out["total"] = (
            pc.pixel_weight * out["pixel"]
            + pc.feature_weight * out.get("feature", 0.0)
            + pc.adversarial_weight * out.get("gan", 0.0)
        )
        return out

    def disc_loss(self, fake: Tensor, real: Tensor) -> Tensor:
        """-log sigmoid(D(real)) - log(1 - sigmoid(D(fake))), averaged over pixels."""
        both = self.disc_net(torch.cat([real, fake]))
        d_real, d_fake = both.float().chunk(2)
        return F.softplus(-d_real).mean() + F.softplus(d_fake).mean()


def adversarial_step(
    tr, batches: Iterator[tuple[Tensor, Tensor]], step: int
) -> tuple[Tensor, Tensor, bool]:
    """One step of the generator, then one of the discriminator. Returns (generator loss, its
    grad norm, finite); the terms are kept in ``tr.adv.last`` for the log."""
    cfg, tc, dev, adv = tr.cfg, tr.cfg.train, tr.device, tr.adv
    d = cfg.diffusion
    tr.opt.zero_grad(set_to_none=True)
    adv.disc.eval().requires_grad_(False)
    sums: dict[str, Tensor] = {}
    pairs = []
    for k in range(tc.grad_accum):
        cond, x0 = on_device(tr, *next(batches))
        gen = torch.Generator(dev).manual_seed(mix_seed(tc.seed, step, k))
        shape = encode_target(x0, cond, residual=d.residual, scale=d.target_scale).shape
        g_batch = tr.dist.world * tr.micro
        z = rank_slice(tr, torch.randn((g_batch, *shape[1:]), device=dev, generator=gen))
        torch.manual_seed(mix_seed(tc.seed, step, k, 1))  # dropout
        with accumulating(tr, tr.ddp, k):
            with autocast_ctx(tr.precision, dev):
                fake = generate(tr.net, cond, z, tr.schedule, cfg)
                terms = adv.generator_losses(fake, x0)
            backward(tr, terms["total"] / tc.grad_accum)
        for name, v in terms.items():
            sums[name] = sums.get(name, 0.0) + v.detach() / tc.grad_accum
        pairs.append((fake.detach(), x0))
    grad_norm, finite = update(tr, step)
    sums["disc"] = _disc_step(tr, pairs)
    adv.last = sums  # no float() here: that would be a host sync per step
    return sums["total"], grad_norm, finite


def _disc_step(tr, pairs: list[tuple[Tensor, Tensor]]) -> Tensor:
    """The discriminator's step on this step's (fake, real) micro-batches."""
    adv = tr.adv
    adv.disc.train().requires_grad_(True)
    adv.opt.zero_grad(set_to_none=True)
    total = torch.zeros((), device=tr.device)
    ddp = adv.disc_net if isinstance(adv.disc_net, DDP) else None
    for k, (fake, real) in enumerate(pairs):
        with accumulating(tr, ddp, k):
            with autocast_ctx(tr.precision, tr.device):
                loss = adv.disc_loss(fake, real) / len(pairs)
            loss.backward()
        total += loss.detach()
    norm = total_grad_norm(adv.disc)
    if bool(torch.isfinite(norm).item()):  # a non-finite step is skipped, as the generator's
        adv.opt.step()
    return total
