import shutil

import pytest


@pytest.fixture(scope="session")
def ffmpeg():
    """`make test` installs ffmpeg during setup, so its absence is a failure, not a skip."""
    missing = [tool for tool in ("ffmpeg", "ffprobe") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{' and '.join(missing)} not found: run `make setup` (installs ffmpeg) or "
                    "install it from your OS packages", pytrace=False)
