"""Rank every image of your own labelled image set from the most harmful (likely
mislabelled) to the most helpful: `python data-cleansing/cleanse.py --root DIR
[--output OUT] [--method confident-learning|final|hara|influence-functions]
[--model mlp|cnn|logreg] [--folds K] [--repeats R] [--top K] [--resume] [--quiet]` with
DIR holding one folder per class (`DIR/<class>/<image>`). Writes OUT/cleanse.csv (most
harmful first, given and predicted label of every image) and OUT/report.html; OUT is the
run folder, which --resume continues; --quiet prints only the result.
"""
from common.cli import run_cli
from datacleansing.cleanse import main

if __name__ == "__main__":
    run_cli(main)
