"""The paper's in-core vs out-of-core comparison in one command: the largest batch that trains
in core and out of core under a card's memory, and the images/s of each.

    # GPU: ResNet-50 at 224x224 on the current card
    python out-of-core-training/eval.py --context cudnn --arch resnet50 --out-dir DIR
    # CPU: a small ResNet under an emulated 40 MiB card
    python out-of-core-training/eval.py --blocks 1 1 1 1 --width 8 --image-size 32 \\
        --small-input --num-classes 10 --device-memory 40MiB --out-dir DIR

Writes results.md, results.csv, measurements.csv and throughput.png into --out-dir; see
ooctrain/evaluation.py.
"""
from common.cli import run_cli
from ooctrain.evaluation import main

if __name__ == "__main__":
    run_cli(main)
