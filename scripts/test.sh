#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite: ruff, then pytest. CPU-only tests; GPU tests skip.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/condiff ] || bash scripts/setup.sh test
.venv/bin/ruff check src tests
.venv/bin/ruff format --check src tests
set +e
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
rc=$?
set -e
# pytest exits 5 when it collected no tests: that is a failure here, never a pass.
if [ "$rc" -eq 5 ]; then echo "no tests were collected" >&2; exit 1; fi
exit "$rc"
