"""Separate songs with X-UMX / UMX:
`python x-umx/separate.py song.mp3 [more ...] --model x-umx --out-dir separated`.

Writes <out-dir>/<input name>/<target>.wav at the input's length and sample rate.
See x-umx/README.md for all options.
"""
from common.cli import run_cli
from xumx.cli import separate_main

if __name__ == "__main__":
    run_cli(separate_main)
