"""Train a quantized network for one named experiment:
`python mixed-precision-dnns/train.py --experiment PARAMETRIC_FP_WAQ_DELTA_XMAX_INIT
--dataset cifar10 --root DATA --init-from runs/mpdnn/DEFAULT [--resume]` trains the
experiment's published recipe (add `--context cudnn`; `mpirun -n N` for N GPUs).

Without a dataset root, experiment or config it runs the CPU smoke configuration
(configs/smoke.yaml) on the bundled real MNIST subset. Experiments:
configs/experiments/*.yaml (or an official .cfg with --cfg); recipe: mpdnn/training.py.
"""
from common.cli import run_cli
from mpdnn.training import main

if __name__ == "__main__":
    run_cli(main)
