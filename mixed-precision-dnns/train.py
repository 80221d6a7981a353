"""Train a quantized network for one named experiment:
`python mixed-precision-dnns/train.py --experiment PARAMETRIC_FP_WAQ_DELTA_XMAX_INIT
--dataset cifar10 --data-dir DATA --init-from runs/mpdnn/DEFAULT [--resume]`.

Without arguments it runs the CPU smoke configuration (configs/smoke.yaml) on the bundled
real MNIST subset. Experiments: configs/experiments/*.yaml; recipe: mpdnn/training.py.
"""
from common.errors import run_cli
from mpdnn.training import main

if __name__ == "__main__":
    run_cli(main)
