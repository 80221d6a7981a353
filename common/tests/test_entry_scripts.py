"""The command-line contract of all 17 entry scripts, run as ``python <script>`` would run
them (in process, through their ``__main__``): ``--help`` works (which also checks that every
numeric flag is declared with a bounded type, see common.cli), an unknown flag and an
abbreviated flag are one ``error:`` line with exit status 2."""
import re
import runpy
import sys

import pytest

from common.paths import REPO_ROOT

ENTRY_SCRIPTS = [
    "x-umx/train.py", "x-umx/separate.py", "x-umx/eval.py",
    "d3net/music-source-separation/train.py", "d3net/music-source-separation/separate.py",
    "d3net/music-source-separation/eval.py",
    "d3net/semantic-segmentation/train.py", "d3net/semantic-segmentation/infer.py",
    "d3net/semantic-segmentation/eval.py",
    "mixed-precision-dnns/train.py", "mixed-precision-dnns/eval.py",
    "data-cleansing/train.py", "data-cleansing/score.py", "data-cleansing/sweep.py",
    "data-cleansing/cleanse.py",
    "out-of-core-training/train.py", "out-of-core-training/plan.py",
]


def run(script, *argv, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [script, *argv])
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(str(REPO_ROOT / script), run_name="__main__")
    out = capsys.readouterr()
    return exc.value.code or 0, out.out, out.err


def one_error_line(err):
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("script", ENTRY_SCRIPTS)
def test_help_unknown_and_abbreviated_flags(script, monkeypatch, capsys):
    code, out, _ = run(script, "--help", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0 and out.startswith("usage:")
    code, _, err = run(script, "--no-such-flag", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2 and "--no-such-flag" in one_error_line(err)
    # A long option cut short (and not itself an option) must not be taken for it.
    options = set(re.findall(r"--[a-z][a-z0-9_-]*", out))
    prefix = next(o[:-2] for o in sorted(options, key=len, reverse=True)
                  if o[:-2] not in options)
    code, _, err = run(script, prefix, "1", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2, (prefix, err)
    one_error_line(err)
