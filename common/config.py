"""Option files: flat YAML mappings of ``option: value`` read as command-line defaults
(:class:`common.cli.Parser`) and a run's resolved options saved as ``config.yaml``.

Saved configs are written atomically (:func:`common.fileio.atomic_write`); a resumed run's
options are compared with its saved ones by :func:`check_resume_options`.
"""
import argparse
import os
from pathlib import Path

import yaml

from common.errors import UserError
from common.fileio import atomic_write


def load_config(path):
    """Read a flat YAML mapping; one-line UserError if missing, unreadable or not a mapping."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise UserError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise UserError(f"config file {path}: {problem}{at}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of option: value, "
                        f"not a {type(data).__name__}")
    return data


def _plain(value):
    """Make a parsed-args value YAML-safe (paths and tuples become str and list)."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        return value.item()
    return value


def save_config(args, out_dir, name="config.yaml"):
    """Write the resolved options (Namespace or dict) to ``out_dir/name``
    atomically and return the path. ``config`` itself is left out (the file already holds
    every resolved value and can be passed back with --config), and so is ``verbose``,
    which changes only what the terminal shows."""
    values = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
    values = {k: _plain(v) for k, v in values.items() if k not in ("config", "verbose")}
    text = yaml.safe_dump(values, sort_keys=True, default_flow_style=False)
    path = Path(out_dir) / name
    with atomic_write(path, "w") as f:
        f.write(text)
    return path


def check_resume_options(saved, current, free=(), hint="use a new --output"):
    """Raise a one-line UserError when a resumed run's options (Namespace or dict) differ
    from the ``saved`` ones, except the keys in ``free`` (e.g. the device, the output
    folder, intervals); ``hint`` ends the message."""
    if isinstance(current, argparse.Namespace):
        current = vars(current)
    current = {k: _plain(v) for k, v in current.items()}
    diffs = [k for k in sorted(set(saved) | set(current))
             if k not in free and saved.get(k) != current.get(k)]
    if diffs:
        shown = ", ".join(f"--{k.replace('_', '-')} ({saved.get(k)!r} -> {current.get(k)!r})"
                          for k in diffs[:4])
        raise UserError(f"cannot --resume with different options: {shown}; {hint}")
