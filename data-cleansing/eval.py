"""The reference's experiment in one command (eval_sgd_influence.py): train, score with every
method, retrain without the k most harmful, summarize:
`python data-cleansing/eval.py --output OUT [--dataset mnist|cifar10|stl10 --root DIR]
[--methods final hara influence-functions confident-learning random] [--counts 0 10 100 ...]
[--trials N]`. Writes OUT/summary.csv and OUT/summary.png; run the same command again to
continue.
"""
from common.cli import run_cli
from datacleansing.experiment import eval_main

if __name__ == "__main__":
    run_cli(eval_main)
