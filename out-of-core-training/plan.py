"""Memory planner: what one training iteration of a network needs and whether it fits:
`python out-of-core-training/plan.py --arch resnet50 --batch-size 1440 --image-size 224
--gpu-memory 16GiB [--solver momentum] [--type-config half] [--blocks ... --width ...
--growth ...] [--measure]`. Prints parameters, gradients, solver state, the activations kept
for backward, the peak working set, nnabla's allocator high-water mark and the smallest
--ooc-budget; --measure checks the prediction against nnabla's CPU allocator.
"""
from common.cli import run_cli
from ooctrain.plan_cli import main

if __name__ == "__main__":
    run_cli(main)
