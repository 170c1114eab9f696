"""Two processes under the real torchrun (gloo, CPU) against one process with the same global batch."""

import os
import shutil
import subprocess
import sys

import pytest
import torch

from condiff.train import checkpoint as ckpt
from tests.conftest import REPO, run_cli, tiny_config, write_yaml
from tests.integration.test_train import weights


def torchrun(nproc: int, *args: str) -> None:
    exe = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    assert exe, "torchrun not found"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run(
        [exe, "--standalone", f"--nproc-per-node={nproc}", "-m", "condiff.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=600,
    )
    assert p.returncode == 0, p.stdout + p.stderr


def close(a: dict, b: dict, rtol: float = 1e-5) -> None:
    """Same weights up to float reassociation: the all-reduce sums per-process gradients in a
    different order, and Adam's normalisation turns 1e-7 gradient differences into ~1e-5 weight
    differences on near-zero-gradient entries; relative to the whole weight vector it stays tiny."""
    assert a.keys() == b.keys()
    diff = sum((a[k].double() - b[k].double()).square().sum() for k in a).sqrt()
    norm = sum(a[k].double().square().sum() for k in a).sqrt()
    assert diff / norm < rtol, (diff / norm).item()


@pytest.mark.slow
def test_two_processes_match_one_and_resume_across_process_counts(tmp_path):
    over = ["train.steps=8", "train.batch_size=8", "train.grad_accum=2", "--no-progress"]
    one = write_yaml(tmp_path / "one.yaml", tiny_config(tmp_path / "one"))
    two = write_yaml(tmp_path / "two.yaml", tiny_config(tmp_path / "two"))
    run_cli("train", "--config", str(one), *over, env={"OMP_NUM_THREADS": "1"})
    torchrun(2, "train", "--config", str(two), *over)
    close(weights(tmp_path / "one"), weights(tmp_path / "two"))
    close(weights(tmp_path / "one", "ema"), weights(tmp_path / "two", "ema"))
    # only rank 0 wrote: one checkpoint folder, one TensorBoard file
    assert len(ckpt.list_checkpoints(tmp_path / "two" / "checkpoints")) == 1
    assert len(list((tmp_path / "two" / "tb").glob("events.*"))) == 1
    # resume the 2-process run on 1 process, and the 1-process run on 2 processes, to step 12
    more = ["train.steps=12", "train.batch_size=8", "train.grad_accum=2", "--no-progress"]
    run_cli("train", "--config", str(two), "--resume", "auto", *more)
    torchrun(2, "train", "--config", str(one), "--resume", "auto", *more)
    close(weights(tmp_path / "one"), weights(tmp_path / "two"))
    assert torch.isfinite(next(iter(weights(tmp_path / "two").values()))).all()
