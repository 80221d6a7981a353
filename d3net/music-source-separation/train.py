"""Train the D3Net network of one source:
`python d3net/music-source-separation/train.py --output runs/d3net-mss --target vocals
--root /data/musdb18`.

With --root (and no --config) it trains the paper's recipe (configs/train.yaml and the
target's official network); without a dataset root, the CPU smoke configuration (a tiny
network) on the bundled MUSDB18 sample. The best weights are written as <output>/<target>.h5
in the official format, so separate.py / eval.py accept --model <output>. See
d3net_mss/training.py for the recipe.
"""
from common.cli import run_cli
from d3net_mss.training import main

if __name__ == "__main__":
    run_cli(main)
