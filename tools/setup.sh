#!/usr/bin/env bash
# One-time (and idempotent) setup shared by `make demo` and `make test`:
#   1. find a CPython 3.10 that runs (nnabla 1.39 ships wheels only up to 3.10),
#   2. build .venv/ and install the pinned requirements plus this repo (editable),
#   3. make sure the system tools are there: ffmpeg (musdb / stempeg / museval decode audio
#      with it) and Chromium (the tests render the HTML reports in it headless),
#   4. prepare the bundled real data (MNIST 5k subset, one-track MUSDB18 root).
# A second run with nothing changed only checks stamps and returns in seconds.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
venv="$repo/.venv"
stamp="$venv/.installed-stamp"

say() { echo "[setup] $*" >&2; }
die() { echo "[setup] error: $*" >&2; exit 1; }

is_py310() { "$1" -c 'import sys, venv; sys.exit(sys.version_info[:2] != (3, 10))' >/dev/null 2>&1; }

find_python310() {
    local candidate
    # pyenv shims exist for every installed version but fail unless that version is
    # selected, so each candidate is run, not merely looked up.
    for candidate in "${PYTHON310:-}" python3.10; do
        [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1 && is_py310 "$candidate" \
            && { command -v "$candidate"; return; }
    done
    if command -v pyenv >/dev/null 2>&1; then
        for candidate in "$(pyenv root)"/versions/3.10.*/bin/python3.10; do
            [ -x "$candidate" ] && is_py310 "$candidate" && { echo "$candidate"; return; }
        done
    fi
    if command -v uv >/dev/null 2>&1; then
        candidate=$(uv python find 3.10 2>/dev/null || true)
        if [ -z "$candidate" ]; then
            uv python install 3.10 >&2 2>/dev/null || true
            candidate=$(uv python find 3.10 2>/dev/null || true)
        fi
        [ -n "$candidate" ] && is_py310 "$candidate" && { echo "$candidate"; return; }
    fi
    return 1
}

if [ ! -x "$venv/bin/python" ] || ! is_py310 "$venv/bin/python"; then
    py=$(find_python310) || die "no CPython 3.10 found; install one (\`pyenv install 3.10\`, \`uv python install 3.10\` or your OS package python3.10) or point PYTHON310=/path/to/python3.10, then rerun"
    say "creating .venv with $py"
    rm -rf "$venv"
    "$py" -m venv "$venv"
fi

# nnabla's own ONNX exporter (used by D3Net's --backend onnx). Its declared dependencies pull
# TensorFlow (GBs), needed only for TensorFlow formats; NNP -> ONNX needs just `onnx`, which
# requirements.txt pins. So it is installed without its dependencies.
converter="nnabla-converter==1.39.0"
want=$( (cat "$repo/requirements.txt" "$repo/pyproject.toml"; echo "$converter") | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "installing pinned requirements into .venv (first run takes a few minutes)"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$repo/requirements.txt"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps "$converter"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -e "$repo"
    echo "$want" > "$stamp"
fi

# System tools from Debian's packages (each command is also its package's name).
missing=()
command -v ffmpeg >/dev/null 2>&1 || missing+=(ffmpeg)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "installing ${missing[*]} from Debian's packages"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        die "missing ${missing[*]}: install it (e.g. \`sudo apt-get install ${missing[*]}\`) and rerun (ffmpeg decodes audio; chromium renders the HTML reports in the tests)"
    fi
fi

"$venv/bin/python" -m common.data.bundled --quiet
