"""Score D3Net on MUSDB18 with museval:
`python d3net/music-source-separation/eval.py --model d3net-mss --root /data/musdb18 [--jobs 4]`.

Per-track JSON scores are written as tracks finish (finished tracks are skipped on rerun);
the aggregated table (median over frames, then over tracks) and an SDR box plot are saved.
"""
from common.cli import run_cli
from d3net_mss.cli import eval_main

if __name__ == "__main__":  # required: --jobs starts worker processes with 'spawn'
    run_cli(eval_main)
