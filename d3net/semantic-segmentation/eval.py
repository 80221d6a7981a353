"""Score D3Net on Cityscapes (mIoU over the 19 train classes, single scale, full resolution):
`python d3net/semantic-segmentation/eval.py --model d3net-s --root /data/cityscapes
--out-dir runs/eval-s` (or --model RUN/final.h5 of a training run).

Intersections and unions are summed over the whole split; the per-class table is printed and
written to <out-dir>/iou.{csv,md,json}. See d3net_seg.metrics for the definitions.
"""
from common.cli import run_cli
from d3net_seg.metrics import eval_main

if __name__ == "__main__":
    run_cli(eval_main)
