"""What a normal run shows on stderr: no nnabla INFO lines, warnings as one line without source
paths; -v and -vv show more."""
from pathlib import Path

from common.dev.testing import run_script

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
