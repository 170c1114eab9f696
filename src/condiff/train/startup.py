"""Where a run's start-up goes: seconds from the process's start to its first finished step.

Issue 33 asks for time to the first step to be measured and cut. The phases are marked as the
trainer passes them and printed once, after the first step, as one line and one
``metrics.jsonl`` record (``{"kind": "startup", "step": ..., phase: seconds, ...}``), so a 16-minute recipe shows what its
first minute was spent on.
"""

from __future__ import annotations

import os
import time


def process_age() -> float | None:
    """Seconds since this process started (Linux ``/proc``), or None where that is unknown."""
    try:
        with open("/proc/self/stat") as f:
            # field 22, after the ")" that closes the command name: start time in clock ticks
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


class StartupClock:
    """``mark(phase)`` ends a phase; ``phases`` maps each phase to its seconds, the first one
    (``imports``: interpreter, imports, config) counted from the process's start when known."""

    def __init__(self) -> None:
        self._last = time.perf_counter()
        age = process_age()
        self.phases: dict[str, float] = {} if age is None else {"imports": round(age, 2)}

    def mark(self, phase: str) -> None:
        now = time.perf_counter()
        self.phases[phase] = round(self.phases.get(phase, 0.0) + now - self._last, 2)
        self._last = now

    def summary(self) -> str:
        total = sum(self.phases.values())
        parts = ", ".join(f"{k} {v:.1f}" for k, v in self.phases.items())
        return f"start-up: {total:.1f} s to the first step ({parts})"
