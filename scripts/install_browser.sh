#!/usr/bin/env bash
# Install what the browser test needs, idempotently: Debian's chromium (/usr/bin/chromium) and playwright in the venv.
# Playwright drives the system Chromium through executable_path; `playwright install` (a download) is never run.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PY="$VENV/bin/python"

if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "install_browser.sh: /usr/bin/chromium is missing and this user cannot run apt-get;" \
             "install it as root: apt-get install -y chromium" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y chromium \
        || { $SUDO apt-get update && $SUDO apt-get install -y chromium; }
fi

if [ ! -x "$PY" ]; then
    echo "install_browser.sh: no virtual environment at $VENV; run 'make install' first" >&2
    exit 1
fi
if ! "$PY" -c "import playwright.sync_api" >/dev/null 2>&1; then
    "$PY" -m pip install --quiet "playwright>=1.40"
fi

echo "browser test ready: $(/usr/bin/chromium --version 2>/dev/null | head -n 1)," \
     "playwright $("$PY" -c 'from importlib.metadata import version; print(version("playwright"))')"
