import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def tiny_config(out_dir: Path, **sections) -> dict:
    """A tiny 4x super-resolution run on the bundled photographs (16px crops)."""
    cfg = {
        "model": {"preset": "tiny"},
        "data": {"crop_size": 16, "val_count": 2},
        "train": {
            "output_dir": str(out_dir),
            "steps": 20,
            "batch_size": 8,
            "warmup_steps": 2,
            "lr": 1e-3,
            "log_every": 5,
            "val_every": 1000,
            "image_every": 1000,
            "ckpt_every": 1000,
            "val_steps": 4,
            "keep_last": 2,
        },
        "sample": {"steps": 4},
    }
    for sec, vals in sections.items():
        cfg.setdefault(sec, {}).update(vals)
    return cfg


def write_yaml(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_cli(*args: str, check: bool = True, timeout: int = 600, env: dict | None = None):
    proc = subprocess.run(
        [sys.executable, "-m", "condiff.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"condiff {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


@contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` for the block, unmounted after it (root only; the
    test skips elsewhere): a disk a test can fill."""
    path.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
        ).returncode
    ):
        pytest.skip("needs root to mount a small tmpfs")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A tiny model trained for 60 steps through the real CLI, on real files."""
    root = tmp_path_factory.mktemp("tiny_run")
    cfg = write_yaml(root / "cfg.yaml", tiny_config(root / "run"))
    p = run_cli(
        "train", "--config", str(cfg), "--no-progress", "train.steps=60", "train.val_every=60"
    )
    rate = float(p.stdout.split("training speed: ")[1].split()[0])
    assert rate > 0  # the steady rate is reported after training
    # --no-progress: one plain line per log window and per validation
    assert "step 5/60  loss " in p.stdout and "step 60/60  loss " in p.stdout
    assert "start-up: " in p.stdout and " s to the first step (" in p.stdout
    assert "validation at step 60: mean_psnr " in p.stdout
    return root / "run"


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def host_reads_per_step(monkeypatch, run_cfg, steps: tuple[int, int] = (6, 14)) -> float:
    """How many times condiff's training step reads a tensor's value on the host (``item``, ``float``,
    ``int``, ``bool``, ``tolist``): each is a sync on a GPU that stops the host from queueing the
    next step. Two runs that differ only in their step count (one log window each, their fixed
    costs alike) give the per-step count as the slope."""
    import condiff
    from condiff.config import RunConfig
    from condiff.train import fit

    package = str(Path(condiff.__file__).parent) + os.sep
    reads = {"n": 0}
    for name in ("item", "__float__", "__int__", "__bool__", "tolist"):
        orig = getattr(torch.Tensor, name)

        def counted(self, *a, _orig=orig, **k):
            # condiff's own reads only (torch's CPU optimizer reads its step counts; on CUDA the
            # fused one does not)
            if sys._getframe(1).f_code.co_filename.startswith(package):
                reads["n"] += 1
            return _orig(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    counts = []
    for n in steps:
        cfg = run_cfg(n)
        cfg["train"].update(steps=n, log_every=1000, val_every=1000, ckpt_every=1000)
        reads["n"] = 0
        fit(RunConfig.from_dict(cfg), progress=False)
        counts.append(reads["n"])
    return (counts[1] - counts[0]) / (steps[1] - steps[0])
