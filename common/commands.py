"""The installed console commands: ``pip install -e .`` (what setup does) puts each on the venv's
PATH, and each runs the same program as the paper's script (``xumx song.wav`` is
``python x-umx/separate.py song.wav``), from any directory.

:data:`COMMANDS` maps a command to its script's ``main``; ``pyproject.toml``'s
``[project.scripts]`` points every command at the launcher of the same name here (a test keeps
the two in step). The paper packages are imported only when their command runs.
"""
import importlib

from common.cli import run_cli

COMMANDS = {
    # music source separation: X-UMX / UMX
    "xumx": ("xumx.cli:separate_main", "x-umx/separate.py"),
    "xumx-train": ("xumx.training:main", "x-umx/train.py"),
    "xumx-eval": ("xumx.cli:eval_main", "x-umx/eval.py"),
    # music source separation: D3Net
    "d3net-separate": ("d3net_mss.cli:separate_main", "d3net/music-source-separation/separate.py"),
    "d3net-mss-train": ("d3net_mss.training:main", "d3net/music-source-separation/train.py"),
    "d3net-mss-eval": ("d3net_mss.cli:eval_main", "d3net/music-source-separation/eval.py"),
    # semantic segmentation: D3Net
    "d3net-segment": ("d3net_seg.inference:infer_main", "d3net/semantic-segmentation/infer.py"),
    "d3net-seg-train": ("d3net_seg.training:main", "d3net/semantic-segmentation/train.py"),
    "d3net-seg-eval": ("d3net_seg.metrics:eval_main", "d3net/semantic-segmentation/eval.py"),
    # mixed-precision DNNs
    "mpdnn-train": ("mpdnn.training:main", "mixed-precision-dnns/train.py"),
    "mpdnn-eval": ("mpdnn.evaluation:main", "mixed-precision-dnns/eval.py"),
    "mpdnn-collect": ("mpdnn.collect:main", "mixed-precision-dnns/collect.py"),
    # data cleansing
    "cleanse": ("datacleansing.cleanse:main", "data-cleansing/cleanse.py"),
    "influence-train": ("datacleansing.cli:train_main", "data-cleansing/train.py"),
    "influence-score": ("datacleansing.cli:score_main", "data-cleansing/score.py"),
    "influence-sweep": ("datacleansing.cli:sweep_main", "data-cleansing/sweep.py"),
    "influence-eval": ("datacleansing.experiment:eval_main", "data-cleansing/eval.py"),
    # out-of-core training
    "ooc-train": ("ooctrain.training:main", "out-of-core-training/train.py"),
    "ooc-plan": ("ooctrain.plan_cli:main", "out-of-core-training/plan.py"),
    "ooc-eval": ("ooctrain.evaluation:main", "out-of-core-training/eval.py"),
}


def _launcher(target):
    def launch():
        module, name = target.split(":")
        run_cli(getattr(importlib.import_module(module), name))
    return launch


for _command, (_target, _) in COMMANDS.items():
    globals()[_command.replace("-", "_")] = _launcher(_target)
