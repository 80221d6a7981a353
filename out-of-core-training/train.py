"""Train ResNet / DenseNet, optionally out of core: `python out-of-core-training/train.py --output runs/ooc`.

Without --config it runs the CPU smoke configuration (tiny ResNet, bundled MNIST subset).
See ooctrain/training.py for the recipe and out-of-core-training/README.md for the commands.
"""
from common.errors import run_cli
from ooctrain.training import main

if __name__ == "__main__":
    run_cli(main)
