"""The installed console commands: one per user-facing job, each the same program as its
paper's script, working from any directory."""
import re
import subprocess
import sys
import tomli
from pathlib import Path

import pytest

from common.commands import COMMANDS
from common.paths import REPO_ROOT

BIN = Path(sys.executable).parent


def test_pyproject_installs_every_command_and_only_those():
    scripts = tomli.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {name: f"common.commands:{name.replace('-', '_')}" for name in COMMANDS}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_command_runs_the_scripts_main(command):
    target, script = COMMANDS[command]
    module, name = target.split(":")
    text = (REPO_ROOT / script).read_text()
    imported = re.search(rf"^from {re.escape(module)} import {name}(?: as (\w+))?$", text, re.M)
    assert imported, f"{script} does not import {target}"
    assert re.search(rf"run_cli\({imported.group(1) or name}\)", text)


@pytest.mark.parametrize("command", ["xumx", "d3net-segment", "cleanse", "ooc-plan"])
def test_installed_command_works_from_any_directory(command, tmp_path):
    exe = BIN / command
    assert exe.is_file(), f"{exe} is not installed (run tools/setup.sh)"
    proc = subprocess.run([str(exe), "--help"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith(f"usage: {command} ")
    proc = subprocess.run([str(exe), "--no-such-flag"], cwd=tmp_path, capture_output=True,
                          text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and \
        "Traceback" not in proc.stderr


def test_every_entry_script_has_a_command():
    folders = ["x-umx", "d3net/music-source-separation", "d3net/semantic-segmentation",
               "mixed-precision-dnns", "data-cleansing", "out-of-core-training"]
    scripts = {str(path.relative_to(REPO_ROOT)) for folder in folders
               for path in (REPO_ROOT / folder).glob("*.py")}
    assert scripts and scripts == {script for _, script in COMMANDS.values()}
