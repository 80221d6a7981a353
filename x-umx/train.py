"""Train X-UMX or UMX: `python x-umx/train.py --output runs/xumx [--config x-umx/configs/xumx.yaml]`.

Without --config it trains the CPU smoke configuration on the bundled MUSDB18 sample.
See xumx/training.py for the recipe and x-umx/README.md for the commands.
"""
from common.errors import run_cli
from xumx.training import main

if __name__ == "__main__":
    run_cli(main)
