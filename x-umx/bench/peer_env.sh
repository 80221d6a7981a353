#!/usr/bin/env bash
# Creates .venv-peer (repository root): the peer open-unmix (PyTorch) that
# bench_separation.py --peer times beside our separator. CPU-only torch; a separate
# environment because torch needs Python >= 3.11 here and the project's venv is Python 3.10.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
python="${PEER_PYTHON:-/usr/bin/python3.11}"
venv="$root/.venv-peer"
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
# The CPU wheel only (never a CUDA build). openunmix goes in without its dependencies: its
# torchaudio requirement has no build for torch 2.13 (the newest, 2.11, fails to load), and the
# timed path (torch STFT, LSTM, Wiener EM) never calls torchaudio; the peer child stubs the
# module (bench_separation.py, peer_umx_child.py).
"$venv/bin/python" -m pip install --quiet "torch==2.13.0+cpu" numpy tqdm
"$venv/bin/python" -m pip install --quiet --no-deps openunmix==1.3.0
"$venv/bin/python" -m pip uninstall --quiet --yes torchaudio 2>/dev/null || true
"$venv/bin/python" -c "import torch; print('peer env ready: torch', torch.__version__)"
