"""Segment images with D3Net (Cityscapes classes):
`python d3net/semantic-segmentation/infer.py IMAGE|FOLDER ... --model d3net-s --out-dir DIR`.

Writes <out-dir>/<stem>_labels.png (trainIds as a palette PNG), <stem>_labelIds.png (Cityscapes
labelIds) and <stem>_overlay.png (with a class legend) at the input's size; a folder gives every
image under it. `--list-models` lists the published weights. See `--help` and
d3net_seg.inference for the details.
"""
from common.cli import run_cli
from d3net_seg.inference import infer_main

if __name__ == "__main__":
    run_cli(infer_main)
