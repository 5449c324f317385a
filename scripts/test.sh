#!/usr/bin/env bash
# Install everything the tests need on a fresh machine, then run the whole suite.
# Usage: bash scripts/test.sh [pytest args]      (the README's test command; .ci/run calls it)
set -uo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv || exit 1
fi
# requirements-dev.txt is the lock of the tested set (runtime + test tools), generated from
# requirements-dev.in by scripts/relock.sh; installing it puts every package at its tested version.
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt || exit 1

# Browser tests drive Debian's Chromium through Playwright (never a downloaded browser).
if [ ! -x /usr/bin/chromium ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && SUDO="sudo"
  if command -v apt-get >/dev/null; then
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null \
      || echo "warning: could not install chromium; browser tests will be skipped" >&2
  fi
fi

# Two workers (pytest-xdist), one per core here; whole files go to one worker, so a module's shared
# fixtures (a trained run checked by several tests) are built once. Each worker has its own STUDIO_HOME.
.venv/bin/python -m pytest -n 2 --dist loadfile "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit "$rc"
