"""Shared fixtures for the X-UMX / UMX tests.

The parity data live in ``$FIXTURES_DIR/x-umx`` (default ``../shared/fixtures`` relative to
the repository root; a relative ``FIXTURES_DIR`` is resolved against the repository root).
A missing directory or file makes the test that needs it *fail* (not skip) with a message
saying where it looked. Everything the tests compare is derived from the files themselves.
"""

import pytest

# The shared script contracts (tests/test_scripts.py) live in common.dev: rewrite their
# asserts like this folder's own, so that a failure shows the values compared.
pytest.register_assert_rewrite("common.dev.mss_testing")

from common.dev.testing import FixtureFolder  # noqa: E402


class XumxFixtures(FixtureFolder):
    """Lazy access to the x-umx fixture files; results are cached for the session."""

    def __init__(self, root=None):
        super().__init__("x-umx", root)

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
    return XumxFixtures()
