"""The long fuzzing run (issue 29): the Hypothesis properties (configs, overrides, image
decoding, request options, timestep grids) and Schemathesis against a live `condiff serve`,
with N cases per target instead of CI's few dozen, random (not CI's fixed cases) unless
--fixed. Prints a table of the cases tried per target and what pytest said.

    python scripts/fuzz.py --cases 1000 [--fixed]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FILES = ("tests/unit/test_fuzz.py", "tests/integration/test_fuzz_api.py")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=1000, help="cases per target (the API: x8)")
    ap.add_argument("--fixed", action="store_true", help="derandomized, as CI runs them")
    a = ap.parse_args()
    report = Path(tempfile.mkstemp(suffix=".json")[1])
    report.unlink()
    env = {**os.environ, "CONDIFF_FUZZ_CASES": str(a.cases), "CONDIFF_FUZZ_REPORT": str(report)}
    if not a.fixed:
        env["CONDIFF_FUZZ_RANDOM"] = "1"
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *FILES],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    counts = json.loads(report.read_text()) if report.is_file() else {}
    api = {k: v for k, v in counts.items() if k.startswith("api ")}
    print("| target | cases |\n|---|---|")
    for k, v in counts.items():
        if not k.startswith("api "):
            print(f"| {k} | {v:,} |")
    print(f"| API (schemathesis, all routes) | {sum(api.values()):,} |")
    for k, v in sorted(api.items()):
        print(f"|   {k[4:]} | {v:,} |")
    print(f"\n{sum(counts.values()):,} cases in {seconds:.0f} s; pytest: "
          f"{proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else '?'}")  # fmt: skip
    if proc.returncode:
        print(proc.stdout[-6000:], proc.stderr[-2000:], sep="\n")
    sys.exit(proc.returncode)


if __name__ == "__main__":
    main()
