"""Evaluation result folders that say what produced them.

An ``eval.py`` writes per-item scores into ``--out-dir`` and reuses them when it is run
again (an interrupted evaluation continues where it stopped). That reuse is only right for
the same model and settings, so :func:`claim_results_folder` records them in
``evaluation.json`` and refuses, in one line, a folder whose scores came from another model
or other settings (or from an unknown one). The model is identified by its weight files'
sizes and SHA-256 digests, not by its name or path.
"""
import hashlib
import json
from pathlib import Path

from common.errors import UserError
from common.fileio import atomic_write, check_output_location

RECORD_NAME = "evaluation.json"


def fingerprint(path):
    """``{"file": "size:sha256"}`` of a weight file (whatever it is called), or
    ``{relative name: "size:sha256"}`` of every file in a folder."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    out = {}
    for f in files:
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        name = "file" if f == path else str(f.relative_to(path))
        out[name] = f"{f.stat().st_size}:{h.hexdigest()}"
    return out


def claim_results_folder(out_dir, settings, result_glob, flag="--out-dir"):
    """Make ``out_dir`` the folder of an evaluation with ``settings`` (a JSON-able dict:
    model fingerprint, targets, options that change scores).

    A folder already recording the same settings is reused as is (its scores are this
    model's); one recording other settings, or holding results (``result_glob``) without a
    record, is refused in one line naming what differs. Returns the folder."""
    out = Path(out_dir)
    check_output_location(out, flag)
    record = out / RECORD_NAME
    settings = json.loads(json.dumps(settings, sort_keys=True))  # plain JSON types
    if record.is_file():
        try:
            saved = json.loads(record.read_text())
        except (OSError, ValueError):
            saved = None
        if saved != settings:
            changed = sorted(k for k in set(settings) | set(saved or {})
                             if (saved or {}).get(k) != settings.get(k))
            raise UserError(f"{flag} {out} holds scores of another evaluation (different "
                            f"{', '.join(changed) or 'record'}); choose a new {flag} or "
                            "remove that folder")
        return out
    if out.is_dir() and any(out.glob(result_glob)):
        raise UserError(f"{flag} {out} holds scores that do not say which model made them; "
                        f"choose a new {flag} or remove them")
    with atomic_write(record, "w") as f:
        json.dump(settings, f, indent=1, sort_keys=True)
    return out
