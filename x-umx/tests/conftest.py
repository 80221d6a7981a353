"""Shared fixtures for the X-UMX / UMX tests.

The parity data live in ``$FIXTURES_DIR/x-umx`` (default ``../shared/fixtures`` relative to
the repository root; a relative ``FIXTURES_DIR`` is resolved against the repository root).
A missing directory or file makes the test that needs it *fail* (not skip) with a message
saying where it looked. Everything the tests compare is derived from the files themselves.
"""
from pathlib import Path

import numpy as np
import pytest

from common.dev.testing import fixtures_root

REPO_ROOT = Path(__file__).resolve().parents[2]



class XumxFixtures:
    """Lazy access to the x-umx fixture files; results are cached for the session."""

    def __init__(self, root):
        self.root = root
        self.dir = root / "x-umx"
        self._cache = {}

    def path(self, name):
        if not self.root.is_dir():
            pytest.fail(f"fixture root {self.root} does not exist: set FIXTURES_DIR to the "
                        f"folder holding x-umx/ (default ../shared/fixtures relative to "
                        f"{REPO_ROOT})", pytrace=False)
        p = self.dir / name
        if not p.exists():
            pytest.fail(f"fixture {p} is missing (FIXTURES_DIR={self.root})", pytrace=False)
        return p

    def npz(self, name):
        key = ("npz", name)
        if key not in self._cache:
            with np.load(self.path(name)) as data:
                self._cache[key] = {k: data[k] for k in data.files}
        return self._cache[key]

    def memo(self, key, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    @property
    def xumx_params(self):
        return self.path("xumx_params.h5")

    @property
    def umx_dir(self):
        return self.path("umx_params")

    @property
    def xumx_outputs(self):
        return self.npz("xumx_outputs.npz")

    @property
    def umx_outputs(self):
        return self.npz("umx_outputs.npz")

    @property
    def losses(self):
        return self.npz("xumx_losses.npz")

    @property
    def audio(self):
        return self.xumx_outputs["audio"]


@pytest.fixture(scope="session")
def fx():
    return XumxFixtures(fixtures_root())
