"""Segment images with D3Net (Cityscapes classes):
`python d3net/semantic-segmentation/infer.py IMAGE [IMAGE ...] --model d3net-s --out-dir DIR`.

Writes <out-dir>/<stem>_labels.png (trainIds as a palette PNG) and <stem>_overlay.png at the
input's size. See `--help` and d3net_seg.inference for the details.
"""
from common.cli import run_cli
from d3net_seg.inference import infer_main

if __name__ == "__main__":
    run_cli(infer_main)
