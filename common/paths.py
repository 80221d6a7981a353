"""Where the repo keeps downloaded weights, bundled data and run outputs."""
import os
from pathlib import Path

CACHE_ENV = "NNABLA_RESEARCH_CACHE"
REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_dir(*parts):
    """Cache root (``$NNABLA_RESEARCH_CACHE``, default ``~/.cache/nnabla-research``),
    optionally joined with ``parts``; the directory is created on demand."""
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "nnabla-research")
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
