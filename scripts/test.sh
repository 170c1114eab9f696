#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite: ruff, then pytest. CPU-only tests; GPU tests skip.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/condiff ] || bash scripts/setup.sh test
# the perceptual-score test needs the LPIPS/DISTS weights (condiff metrics setup, once)
.venv/bin/python -c "from condiff.evaluate.perceptual import missing; import sys; sys.exit(bool(missing()))" \
  || .venv/bin/condiff metrics setup || echo "could not set up LPIPS/DISTS weights: that test will skip"
# The page test drives Debian's Chromium with Playwright (no browser download); install it where
# we can (root with apt), else that one test skips and says why.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
    >/dev/null 2>&1 || echo "could not install chromium: the browser test will skip"
fi
.venv/bin/ruff check src tests
.venv/bin/ruff format --check src tests
set +e
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
rc=$?
set -e
# pytest exits 5 when it collected no tests: that is a failure here, never a pass.
if [ "$rc" -eq 5 ]; then echo "no tests were collected" >&2; exit 1; fi
exit "$rc"
