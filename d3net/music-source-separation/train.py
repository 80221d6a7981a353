"""Train the D3Net network of one source:
`python d3net/music-source-separation/train.py --output runs/d3net-mss --target vocals
--config d3net/music-source-separation/configs/train.yaml --root /data/musdb18`.

Without --config it trains the CPU smoke configuration (a tiny network) on the bundled MUSDB18
sample. The best weights are written as <output>/<target>.h5 in the official format, so
separate.py / eval.py accept --model <output>. See d3net_mss/training.py for the recipe.
"""
from common.errors import run_cli
from d3net_mss.training import main

if __name__ == "__main__":
    run_cli(main)
