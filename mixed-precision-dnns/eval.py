"""Evaluate a trained quantized network (validation error, memory, per-layer bitwidths):
`python mixed-precision-dnns/eval.py --model runs/mpdnn/PARAMETRIC_FP_WAQ_DELTA_XMAX
[--out-dir DIR]`, or an official `params_best.h5` with `--experiment NAME --dataset cifar10
--root DATA`.
"""
from common.cli import run_cli
from mpdnn.evaluation import main

if __name__ == "__main__":
    run_cli(main)
