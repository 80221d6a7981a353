"""``--list-models`` on every inference command (through the real scripts): the published
weights the command accepts, each with its size and whether it is cached in a temporary
weights cache, then exit 0 without loading or writing anything; and the download size a
HEAD request reports for weights not cached yet (a local HTTP server)."""
import http.server
import io
import threading
from pathlib import Path

import pytest

from common import pretrained
from common.dev.testing import run_script

REPO = Path(__file__).resolve().parents[2]
COMMANDS = {  # script -> the published names its --model accepts
    "x-umx/separate.py": ("x-umx", "umx", "umxhq"),
    "x-umx/eval.py": ("x-umx", "umx", "umxhq"),
    "d3net/music-source-separation/separate.py": ("d3net-mss", "d3net-openvino"),
    "d3net/music-source-separation/eval.py": ("d3net-mss", "d3net-openvino"),
    "d3net/semantic-segmentation/infer.py": ("d3net-s", "d3net-l"),
}
OFFLINE = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
           "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
           "no_proxy": "", "NO_PROXY": ""}
# cached in the temporary cache: a file of 3 KiB, an extracted archive of 4 x 1 KiB
CACHED_FILES = {"x-umx": ("x-umx.h5", 3 * 1024, "3.0 KiB"),
                "d3net-s": ("D3Net-S.h5", 2 * 1024 * 1024, "2.0 MiB")}
CACHED_FOLDERS = {"umx": ("umx", 4, "4.0 KiB"), "d3net-mss": ("d3net-mss", 4, "4.0 KiB")}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    weights = root / "weights"
    weights.mkdir()
    for filename, size, _ in CACHED_FILES.values():
        (weights / filename).write_bytes(b"\0" * size)
    for folder, count, _ in CACHED_FOLDERS.values():
        (weights / folder).mkdir()
        for i in range(count):
            (weights / folder / f"part{i}.h5").write_bytes(b"\1" * 1024)
    return root


def rows(stdout):
    """{name: (size, state)} of the table ``--list-models`` prints."""
    out = {}
    for line in stdout.splitlines():
        cells = [c for c in line.split("  ") if c.strip()]
        if cells and cells[0].strip() in pretrained.REGISTRY:
            out[cells[0].strip()] = (cells[1].strip(), cells[2].strip())
    return out


@pytest.mark.parametrize("script", sorted(COMMANDS))
def test_list_models_on_every_inference_command(script, cache, tmp_path):
    r = run_script(REPO / script, "--list-models", "--out-dir", tmp_path / "never", check=False,
                   env={"NNABLA_RESEARCH_CACHE": str(cache), **OFFLINE})
    assert r.returncode == 0, r.stderr
    table = rows(r.stdout)
    assert set(table) == set(COMMANDS[script]), r.stdout
    for name, (size, state) in table.items():
        expected = {**CACHED_FILES, **CACHED_FOLDERS}.get(name)
        if expected:
            assert (size, state) == (expected[2], "cached"), (name, r.stdout)
        else:
            assert (size, state) == ("unknown", "not cached"), (name, r.stdout)
        assert pretrained.REGISTRY[name].description[:40] in r.stdout
    assert str(cache / "weights") in r.stdout
    assert not (tmp_path / "never").exists(), "--list-models wrote output"


class _HeadOnly(http.server.BaseHTTPRequestHandler):
    def do_HEAD(self):
        self.send_response(200)
        self.send_header("Content-Length", str(3 * 1024 * 1024 // 2))
        self.end_headers()

    def log_message(self, *args):
        pass


def test_download_size_of_weights_not_cached_comes_from_the_server(tmp_path, monkeypatch):
    server = http.server.HTTPServer(("127.0.0.1", 0), _HeadOnly)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        entry = pretrained.REGISTRY["d3net-l"]
        url = f"http://127.0.0.1:{server.server_port}/{entry.filename}"
        monkeypatch.setitem(pretrained.REGISTRY, "d3net-l",
                            pretrained.dataclasses.replace(entry, url=url))
        for name in ("http_proxy", "HTTP_PROXY"):
            monkeypatch.delenv(name, raising=False)
        out = io.StringIO()
        pretrained.list_models(["d3net-l"], cache_root=tmp_path, file=out)
    finally:
        server.shutdown()
    assert rows(out.getvalue()) == {"d3net-l": ("1.5 MiB download", "not cached")}
    assert not any((tmp_path / "weights").iterdir()), "listing must not download"
