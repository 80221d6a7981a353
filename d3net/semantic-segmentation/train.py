"""Train D3Net for Cityscapes semantic segmentation:
`python d3net/semantic-segmentation/train.py --root /data/cityscapes --output runs/d3net-l
[--resume]` trains the paper's D3Net-L recipe (configs/train_D3Net_L.yaml; D3Net-S: add
`--config d3net/semantic-segmentation/configs/train_D3Net_S.yaml`).

Without a dataset root it runs the CPU smoke configuration (a tiny D3Net on a generated
SYNTHETIC set in the Cityscapes layout). See d3net_seg/training.py for the recipe.
"""
from common.cli import run_cli
from d3net_seg.training import main

if __name__ == "__main__":
    run_cli(main)
