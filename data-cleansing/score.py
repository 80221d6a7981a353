"""Score every training sample of a run by its influence on the validation loss:
`python data-cleansing/score.py RUN --method final|hara|random [--impl batched|loop]
[--hessian reference|textbook]`. Writes RUN/influence_<method>.csv, most harmful first.
"""
from common.errors import run_cli
from datacleansing.cli import score_main

if __name__ == "__main__":
    run_cli(score_main)
