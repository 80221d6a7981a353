"""Train D3Net for Cityscapes semantic segmentation:
`python d3net/semantic-segmentation/train.py --output runs/d3net-s --root /data/cityscapes
--config d3net/semantic-segmentation/configs/train_D3Net_S.yaml [--resume]`.

Without --config it runs the CPU smoke configuration (a tiny D3Net on a generated SYNTHETIC
set in the Cityscapes layout). See d3net_seg/training.py for the recipe.
"""
from common.errors import run_cli
from d3net_seg.training import main

if __name__ == "__main__":
    run_cli(main)
