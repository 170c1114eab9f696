"""Two processes under the real torchrun (gloo, CPU) against one process with the same global batch."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from condiff import checkpoint as ckpt
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


def one_and_two_processes(tmp_path, *extra: str) -> tuple:
    """8 steps of the tiny run on one process and on two (torchrun, gloo), the same global
    batch; their weights and EMA agree. Returns the two runs' config files."""
    over = ["train.steps=8", "train.batch_size=8", "train.grad_accum=2", "--no-progress", *extra]
    one = write_yaml(tmp_path / "one.yaml", tiny_config(tmp_path / "one"))
    two = write_yaml(tmp_path / "two.yaml", tiny_config(tmp_path / "two"))
    run_cli("train", "--config", str(one), *over, env={"OMP_NUM_THREADS": "1"})
    torchrun(2, "train", "--config", str(two), *over)
    close(weights(tmp_path / "one"), weights(tmp_path / "two"))
    close(weights(tmp_path / "one", "ema"), weights(tmp_path / "two", "ema"))
    return one, two


@pytest.mark.slow
def test_two_processes_match_one_and_resume_across_process_counts(tmp_path):
    # a budget far above 8 steps: planned at step 3 on every rank (rank 0's plan broadcast)
    one, two = one_and_two_processes(tmp_path, "train.budget_minutes=600")
    # only rank 0 wrote: one checkpoint folder, one TensorBoard file
    assert len(ckpt.list_checkpoints(tmp_path / "two" / "checkpoints")) == 1
    assert len(list((tmp_path / "two" / "tb").glob("events.*"))) == 1
    assert (
        ckpt.read_state(ckpt.latest_checkpoint(tmp_path / "two" / "checkpoints"))["planned_steps"]
        == 8
    )
    # resume the 2-process run on 1 process, and the 1-process run on 2 processes, to step 12
    # (without a budget: train.steps, not the plan, says where a resumed run ends)
    more = ["train.steps=12", "train.batch_size=8", "train.grad_accum=2", "--no-progress"]
    run_cli("train", "--config", str(two), "--resume", "auto", *more)
    torchrun(2, "train", "--config", str(one), "--resume", "auto", *more)
    close(weights(tmp_path / "one"), weights(tmp_path / "two"))
    assert torch.isfinite(next(iter(weights(tmp_path / "two").values()))).all()
    assert ckpt.latest_checkpoint(tmp_path / "two" / "checkpoints").name.endswith("12")


@pytest.mark.slow
def test_two_processes_with_steps_decided_on_the_device_match_one(tmp_path):
    """Fused AdamW (the CUDA default): each step's finiteness read a step late, on every rank,
    from all-reduced gradients; two processes still train the one process's weights."""
    one_and_two_processes(tmp_path, "train.fused_adamw=true")


@pytest.mark.slow
def test_sigterm_to_torchrun_stops_every_rank_at_one_step_and_resume_is_exact(tmp_path):
    """Preemption as SLURM or Kubernetes does it: SIGTERM to torchrun, loader workers on."""
    steps = 100  # the signal comes at the 10th logged step
    over = [
        f"train.steps={steps}",
        "train.batch_size=8",
        "train.log_every=1",
        "train.ckpt_every=100000",
        "data.num_workers=2",
        "--no-progress",
    ]
    a = write_yaml(tmp_path / "a.yaml", tiny_config(tmp_path / "a"))
    b = write_yaml(tmp_path / "b.yaml", tiny_config(tmp_path / "b"))
    exe = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    cmd = [exe, "--standalone", "--nproc-per-node=2", "-m", "condiff.cli", "train"]
    proc = subprocess.Popen(
        [*cmd, "--config", str(a), *over],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    log = tmp_path / "a" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and (not log.exists() or log.read_text().count('"train"') < 10):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    saved = ckpt.list_checkpoints(tmp_path / "a" / "checkpoints")
    assert len(saved) == 1, out  # rank 0 wrote one whole checkpoint at the step both reached
    stopped = int(saved[0].name.split("_")[1])
    assert 10 <= stopped < steps, out
    # torchrun signals both ranks; rank 0 names SIGTERM, or the other rank when rank 1's flag
    # reached the all-reduce before rank 0's own signal handler ran
    said = rf"interrupted \((SIGTERM|a signal to another rank)\) at step {stopped}/{steps}"
    assert re.search(said, out), out[-3000:]
    assert "exit status 75" in out
    assert "condiff/train" not in out  # no traceback through condiff (torchrun reports its own)
    assert ckpt.read_state(saved[0])["step"] == stopped
    torchrun(2, "train", "--config", str(a), "--resume", "auto", *over)
    torchrun(2, "train", "--config", str(b), *over)
    for which in ("model", "ema"):
        wa, wb = weights(tmp_path / "a", which), weights(tmp_path / "b", which)
        assert all(torch.equal(wa[k], wb[k]) for k in wa), which
