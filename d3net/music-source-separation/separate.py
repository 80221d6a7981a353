"""Separate songs with D3Net:
`python d3net/music-source-separation/separate.py song.mp3 [more ...] --model d3net-mss
--out-dir separated`.

Writes <out-dir>/<input name>/<target>.wav at the input's length and sample rate.
--model also takes a train.py output folder or one <target>.h5; see d3net_mss/cli.py.
"""
from common.cli import run_cli
from d3net_mss.cli import separate_main

if __name__ == "__main__":
    run_cli(separate_main)
