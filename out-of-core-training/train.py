"""Train ResNet / DenseNet, optionally out of core (``--ooc-budget``).

``python out-of-core-training/train.py --output runs/ooc`` is the CPU smoke run (a tiny
ResNet on the bundled MNIST subset); with ``--root DIR`` (ImageNet class folders) or a
``--config`` it trains the paper's recipe. See ooctrain/training.py for the recipe and the
run lifecycle, out-of-core-training/README.md for the commands.
"""
from common.cli import run_cli
from ooctrain.training import main

if __name__ == "__main__":
    run_cli(main)
