"""Find the harmful and helpful images of your own labelled image set:
`python data-cleansing/cleanse.py --root DIR [--output OUT] [--model cnn|mlp|logreg]
[--epochs N] [--image-size S] [--top K] [--resume]` with DIR holding one folder per class
(`DIR/<class>/<image>`). Writes OUT/influence.csv (most harmful first) and OUT/report.html;
OUT is the run folder, which --resume continues.
"""
from common.cli import run_cli
from datacleansing.cleanse import main

if __name__ == "__main__":
    run_cli(main)
