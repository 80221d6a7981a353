"""Train X-UMX or UMX: `python x-umx/train.py --root /data/musdb18 --output runs/xumx`.

With --root (and no --config) it trains the paper's recipe (configs/xumx.yaml); without a
dataset root, the CPU smoke configuration on the bundled MUSDB18 sample.
See xumx/training.py for the recipe and x-umx/README.md for the commands.
"""
from common.cli import run_cli
from xumx.training import main

if __name__ == "__main__":
    run_cli(main)
