"""The stop phase's signals: SIGINT/SIGTERM become a flag checked between steps."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
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
    A second signal raises KeyboardInterrupt at once (the CLI exits 130). Once a stop has begun,
    a second signal after the loop (while loaders shut down, or after `main` has returned, where
    no `except` can catch a KeyboardInterrupt and Python would die by SIGINT) exits 130 at once:
    the checkpoint is already whole on disk."""

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
            signal.signal(sig, _exit_second_signal if self.set else old)


def _exit_second_signal(signum: int, frame: Any) -> None:
    """A second signal after the stop phase: the run is saved; leave now, with the CLI's code."""
    sys.stdout.flush()
    print("interrupted", file=sys.stderr, flush=True)
    os._exit(130)  # EXIT_SECOND_SIGNAL; a raise here could land outside every handler


def loader_worker_init(_: int) -> None:
    """Loader workers ignore SIGINT/SIGTERM (a terminal or scheduler signals the whole process
    group): the main process saves a checkpoint first, then shuts them down. A worker killed
    mid-save would make PyTorch raise in the main process and lose that checkpoint."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
