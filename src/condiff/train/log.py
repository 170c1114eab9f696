"""Where a training run's records go: TensorBoard, ``RUN/metrics.jsonl`` and plain log lines.

Rank 0 only. Plain lines (one per log window, one per validation) are printed when there is no
progress bar (``--no-progress``, or stdout is not a terminal: batch jobs, torchrun, CI logs), so a
run is never silent; ``metrics.jsonl`` holds the same records as JSON lines, to plot without
TensorBoard.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torch import Tensor

from condiff.files import atomic_write_text, why


class LogWriteError(RuntimeError):
    """A run's logs (TensorBoard, ``metrics.jsonl``) could not be written: a full disk, most
    often. The run stops; its checkpoints so far are whole."""


def _quiet_tensorboard_thread() -> None:
    """TensorBoard writes from a thread of its own, which prints a traceback when the disk
    fills; the main thread gets the same error on its next write and says it in one line."""
    if getattr(threading.excepthook, "_condiff", False):
        return
    from tensorboard.summary.writer.event_file_writer import _AsyncWriterThread

    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if isinstance(args.thread, _AsyncWriterThread) and isinstance(args.exc_value, OSError):
            return
        previous(args)

    hook._condiff = True  # type: ignore[attr-defined]
    threading.excepthook = hook


def _duration(seconds: float) -> str:
    s = round(seconds)
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def _drop_after(path: Path, step: int) -> None:
    """Keep the records of ``path`` up to ``step`` (and unreadable or step-less lines as they
    are); rewritten beside it and renamed in."""
    keep = []
    for line in path.read_text().splitlines():
        try:
            rec_step = json.loads(line).get("step", 0)
        except (json.JSONDecodeError, AttributeError):
            rec_step = 0
        if rec_step <= step:
            keep.append(line)
    atomic_write_text(path, "".join(k + "\n" for k in keep))


class RunLog:
    def __init__(
        self,
        run_dir: Path,
        *,
        start_step: int,
        total: int,
        batch_size: int,
        progress: bool,
    ) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.total, self.batch_size = total, batch_size
        self.run_dir, self.last_step, self.failed = run_dir, start_step, False
        _quiet_tensorboard_thread()
        with self._writing():
            self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=start_step or None)
            jsonl = run_dir / "metrics.jsonl"
            if jsonl.is_file():  # a resumed run replays the steps after its checkpoint: drop them
                _drop_after(jsonl, start_step)
            self.jsonl = jsonl.open("a")
        self.pbar = None
        if progress and sys.stdout.isatty():
            from tqdm.auto import tqdm

            self.pbar = tqdm(
                total=total, initial=start_step, desc="train", unit="step", dynamic_ncols=True
            )

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """A failed write of the logs stops the run with one line saying where and why."""
        try:
            yield
        except OSError as e:
            self.failed = True
            raise LogWriteError(
                f"cannot write the run's logs in {self.run_dir} ({why(e)}); training stopped "
                f"after step {self.last_step}. The checkpoints already written are whole: free "
                "space, then rerun with --resume auto"
            ) from None

    def _record(self, rec: dict[str, Any]) -> None:
        self.last_step = max(self.last_step, int(rec.get("step", 0)))
        with self._writing():
            self.jsonl.write(json.dumps({"time": round(time.time(), 3), **rec}) + "\n")
            self.jsonl.flush()

    def _line(self, text: str) -> None:
        if self.pbar is None:
            print(text, flush=True)
        else:
            self.pbar.write(text)

    def budget(self, step: int, planned: int, img_s: float, text: str) -> None:
        """``train.budget_minutes``' plan: the run's new last step, a record and a line."""
        self.total = planned
        if self.pbar is not None:
            self.pbar.total = planned
            self.pbar.refresh()
        self._record({"kind": "budget", "step": step, "planned_steps": planned, "img_per_s": img_s})
        self._line(text)

    def step(self) -> None:
        if self.pbar is not None:
            self.pbar.update(1)

    def train(
        self,
        step: int,
        *,
        loss: float,
        lr: float,
        grad_norm: float,
        img_s: float,
        skipped: int,
        terms: dict[str, float] | None = None,
    ) -> None:
        """One log window's means; ``terms``: a stage's loss terms at the window's last step."""
        w = self.writer
        terms = terms or {}
        with self._writing():
            for k, v in terms.items():
                w.add_scalar(f"train/{k}", v, step)
            w.add_scalar("train/loss", loss, step)
            w.add_scalar("train/lr", lr, step)
            w.add_scalar("train/grad_norm", grad_norm, step)
            w.add_scalar("train/img_per_s", img_s, step)
            w.add_scalar("train/skipped_steps", skipped, step)
        self._record(
            {
                "kind": "train",
                "step": step,
                "loss": loss,
                "lr": lr,
                "grad_norm": grad_norm,
                "img_per_s": img_s,
                "skipped_steps": skipped,
                **{f"loss_{k}": v for k, v in terms.items()},
            }
        )
        if self.pbar is not None:
            self.pbar.set_postfix(loss=f"{loss:.4f}", img_s=f"{img_s:.1f}")
            return
        eta = (self.total - step) * self.batch_size / img_s if img_s > 0 else float("nan")
        self._line(
            f"step {step}/{self.total}  loss {loss:.4f}  lr {lr:.2e}  {img_s:.1f} img/s  "
            f"eta {_duration(eta) if eta == eta else '?'}"
            + (f"  skipped {skipped}" if skipped else "")
            + "".join(f"  {k} {v:.4f}" for k, v in terms.items() if k != "total")
        )

    def skipped(self, step: int, skipped: int) -> None:
        with self._writing():
            self.writer.add_scalar("train/skipped_steps", skipped, step)

    def validation(
        self,
        step: int,
        metrics: dict[str, float],
        grid: Tensor | None,
        columns: str = "cond|mean|sample|target",
    ) -> None:
        with self._writing():
            for k, v in metrics.items():
                self.writer.add_scalar(f"val/{k}", v, step)
            if grid is not None:
                self.writer.add_image(f"val/{columns}", grid, step)
        self._record({"kind": "val", "step": step, **metrics})
        parts = [f"{k} {v:.4f}" if "ssim" in k else f"{k} {v:.2f}" for k, v in metrics.items()]
        self._line(f"validation at step {step}: " + "  ".join(parts))

    def message(self, text: str) -> None:
        self._line(text)

    def startup(self, step: int, phases: dict[str, float], summary: str) -> None:
        """The run's start-up, once per call (:mod:`condiff.train.startup`)."""
        self._line(summary)
        self._record({"kind": "startup", "step": step, **phases})

    def close(self) -> None:
        if self.pbar is not None:
            self.pbar.close()
        if self.failed:  # already said; closing may only fail again
            with contextlib.suppress(OSError):
                self.writer.close()
            with contextlib.suppress(OSError):
                self.jsonl.close()
            return
        with self._writing():
            self.writer.flush()
            self.writer.close()
            self.jsonl.close()
