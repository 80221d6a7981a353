"""Train a classifier and record the trace the influence methods need:
`python data-cleansing/train.py --output RUN [--dataset mnist5k|mnist|cifar10|folder]
[--root DIR] [--model cnn|mlp|logreg] [--epochs N] [--cache final|all]
[--flip-labels FRACTION] [--resume]`.

Without --root it runs the CPU smoke configuration (configs/smoke.yaml: the reference CNN on
the bundled real MNIST subset); with a dataset --root, the paper's recipe (configs/paper.yaml).
An occupied --output is refused unless --resume continues it. Next steps: score.py RUN,
sweep.py RUN.
"""
from common.cli import run_cli
from datacleansing.cli import train_main

if __name__ == "__main__":
    run_cli(train_main)
