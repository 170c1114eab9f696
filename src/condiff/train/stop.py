"""The stop phase's signals: SIGINT/SIGTERM become a flag checked between steps."""

from __future__ import annotations

import contextlib
import signal
import warnings
from typing import Any

# Known noise from torch internals that says nothing to a user of condiff train.
QUIET = (
    r"Profiler function .* will be ignored",  # dynamo tracing through record_function
    r"barrier\(\): using the device under current context",
)


def quiet_torch_warnings() -> None:
    for pattern in QUIET:
        warnings.filterwarnings("ignore", message=pattern)


class StopFlag:
    """Turns SIGINT/SIGTERM into a flag checked between steps, so a checkpoint is saved first.
    A second signal raises KeyboardInterrupt at once."""

    def __init__(self) -> None:
        self.set = False
        self.name = ""  # the signal's name, e.g. SIGTERM
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: no handlers
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.set:  # second signal: give up immediately
            raise KeyboardInterrupt
        self.set, self.name = True, signal.Signals(signum).name

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def loader_worker_init(_: int) -> None:
    """Loader workers ignore SIGINT/SIGTERM (a terminal or scheduler signals the whole process
    group): the main process saves a checkpoint first, then shuts them down. A worker killed
    mid-save would make PyTorch raise in the main process and lose that checkpoint."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
