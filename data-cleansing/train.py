"""Train a classifier and record the trace the influence methods need:
`python data-cleansing/train.py --output RUN [--model cnn|mlp|logreg] [--epochs N]
[--cache final|all] [--flip-labels FRACTION] [--resume]`.

Without arguments it runs the CPU smoke configuration (configs/smoke.yaml: the reference CNN
on the bundled real MNIST subset). Next steps: score.py RUN, sweep.py RUN.
"""
from common.errors import run_cli
from datacleansing.cli import train_main

if __name__ == "__main__":
    run_cli(train_main)
