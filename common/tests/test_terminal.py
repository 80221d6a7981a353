"""What a normal run shows on stderr: no nnabla INFO lines, warnings as one line without source
paths; -v and -vv show more."""
import re
from pathlib import Path

from common.dev.testing import FixtureFolder, run_script, synthetic_music, write_audio
from common.paths import REPO_ROOT

SCRIPT = Path(__file__).parent / "_terminal_script.py"


def test_a_normal_run_is_quiet():
    proc = run_script(SCRIPT)
    lines = proc.stderr.splitlines()
    assert "[nnabla][INFO]" not in proc.stderr and "an info message" not in proc.stderr
    assert "warning: a warning message" in lines
    assert "warning: a python warning" in lines
    assert SCRIPT.name not in proc.stderr  # no source paths
    assert proc.stdout.strip() == "done"


def test_verbose_shows_info_and_full_warnings():
    proc = run_script(SCRIPT, "-v")
    assert "info: an info message" in proc.stderr.splitlines()
    assert "debug: a debug detail" not in proc.stderr
    assert "UserWarning: a python warning" in proc.stderr and SCRIPT.name in proc.stderr
    assert "debug: a debug detail" in run_script(SCRIPT, "-vv").stderr.splitlines()


def test_verbose_is_not_a_config_key(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("verbose: 2\n")
    proc = run_script(SCRIPT, "--config", config, check=False)
    assert proc.returncode == 2 and "unknown key 'verbose'" in proc.stderr


def _noise(stderr):
    """The stderr lines a normal run must not show: nnabla's log lines, Python warnings with
    their source locations, tracebacks."""
    return [line for line in stderr.splitlines()
            if "[nnabla]" in line or re.search(r"\.py:\d+: \w*Warning", line)
            or line.startswith(("Traceback", "  warnings.warn"))]


def test_real_scripts_keep_stderr_quiet(tmp_path):
    """Separation on the nnabla path and a training run, as a user starts them."""
    assert len(_noise("/a/b.py:3: UserWarning: w\n[nnabla][INFO]: i\nbackend: nnabla")) == 2
    song = write_audio(tmp_path / "song.wav", synthetic_music(1.0, 44100, 2), 44100)
    model = FixtureFolder("x-umx").path("xumx_params.h5")
    runs = [
        run_script(REPO_ROOT / "x-umx" / "separate.py", song, "--model", model, "--out-dir",
                   tmp_path / "out", "--backend", "nnabla", quiet=True),
        run_script(REPO_ROOT / "data-cleansing" / "train.py", "--output", tmp_path / "run",
                   "--train-samples", 64, "--model", "logreg", "--epochs", 1, quiet=True),
    ]
    for proc in runs:
        assert proc.returncode == 0 and not _noise(proc.stderr), proc.stderr
