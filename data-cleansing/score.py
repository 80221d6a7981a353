"""Score every training sample of a run by its influence on the validation loss:
`python data-cleansing/score.py RUN --method final|hara|random [--impl reverse|loop|batched|double]
[--hessian reference|textbook] [--out-dir DIR]`. Writes influence_<method>.csv (most harmful
first) and its settings record influence_<method>.json into DIR (default: RUN); scores made
with other settings or another run are never reused.
"""
from common.cli import run_cli
from datacleansing.cli import score_main

if __name__ == "__main__":
    run_cli(score_main)
