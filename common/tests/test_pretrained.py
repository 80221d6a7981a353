"""Tests for common.pretrained against a real HTTP server on 127.0.0.1.

The server is started by the tests (port 0, one thread) and each route has a
behaviour: ``normal`` (200, ignores Range), ``range`` (honours Range), ``cut``
(first request stops after ``cut_after`` bytes, later requests honour Range),
``truncated`` (announces more bytes than it sends, every time), ``404`` and ``500``.
"""
import hashlib
import io
import json
import socket
import stat
import threading
import urllib.request
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from common import pretrained
from common.errors import UserError
from common.pretrained import REGISTRY, Weights

PAYLOAD = bytes(range(256)) * 800  # 200 KiB: several 64 KiB reads


def sha(data):
    return hashlib.sha256(data).hexdigest()


@dataclass
class Route:
    body: bytes
    mode: str = "normal"
    cut_after: int = 0
    requests: list = field(default_factory=list)  # Range header of each request (or None)


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        route = self.server.routes.get(self.path)
        if route is None:
            self.send_error(404)
            return
        header = self.headers.get("Range")
        route.requests.append(header)
        first = len(route.requests) == 1
        body = route.body
        if route.mode in ("404", "500"):
            self.send_error(int(route.mode))
            return
        if route.mode == "truncated":
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) + 1000))
            self.end_headers()
            self.wfile.write(body)
            return
        if route.mode == "cut" and first:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[:route.cut_after])
            return  # HTTP/1.0: the server closes the connection here
        if route.mode in ("range", "cut") and header and header.startswith("bytes="):
            start = int(header[len("bytes="):].split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            self.wfile.write(body[start:])
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Server:
    def __init__(self):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.routes = {}
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.01,), daemon=True)
        self.thread.start()

    def add(self, path, body, mode="normal", cut_after=0):
        route = Route(body, mode, cut_after)
        self.httpd.routes[path] = route
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}", route

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = Server()
    yield srv
    srv.close()


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Cache under tmp_path, no proxies for 127.0.0.1, no waiting between retries."""
    root = tmp_path / "cache"
    monkeypatch.setenv("NNABLA_RESEARCH_CACHE", str(root))
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setattr(pretrained, "RETRY_DELAY", 0)
    return root


def register(monkeypatch, name, url, sha256=None, members=()):
    entry = Weights(name, url, url.rsplit("/", 1)[-1], sha256, "test entry", "tests",
                    tuple(members))
    monkeypatch.setitem(REGISTRY, name, entry)
    return entry


def leftovers(root):
    """Files in the cache other than final files and checksums.json."""
    return sorted(p.name for p in root.rglob("*") if p.name.endswith((".part", ".tmp")))


def make_zip(entries):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for info, data in entries:
            zf.writestr(info, data)
    return buf.getvalue()


# ------------------------------------------------------------------- downloads


def test_download_lands_under_final_name_and_is_cached(server, cache):
    url, route = server.add("/files/model.h5", PAYLOAD)
    path = pretrained.fetch(url, progress=False)
    assert path.name == "model.h5"
    assert path.read_bytes() == PAYLOAD
    assert cache / "weights" in path.parents
    assert pretrained.fetch(url, progress=False) == path  # from the cache
    assert len(route.requests) == 1
    assert leftovers(cache) == []
    assert path == pretrained.cached_path(url)


def test_registry_name_with_published_hash(server, cache, monkeypatch):
    url, route = server.add("/toy.h5", PAYLOAD)
    register(monkeypatch, "toy", url, sha(PAYLOAD))
    path = pretrained.get_weights("toy", progress=False)
    assert path == cache / "weights" / "toy.h5"
    assert path.read_bytes() == PAYLOAD
    pretrained.get_weights("toy", progress=False)
    assert len(route.requests) == 1
    # A published hash is not duplicated into checksums.json.
    assert not (cache / "weights" / "checksums.json").exists()


def test_per_call_cache_root(server, cache, tmp_path):
    url, _ = server.add("/a.h5", PAYLOAD)
    path = pretrained.fetch(url, cache_root=tmp_path / "elsewhere", progress=False)
    assert (tmp_path / "elsewhere" / "weights") in path.parents
    assert not (cache / "weights").exists() or not any((cache / "weights").iterdir())


def test_progress_bar_goes_to_stderr(server, capsys):
    url, _ = server.add("/p.h5", PAYLOAD)
    pretrained.fetch(url, progress=True)
    out, err = capsys.readouterr()
    assert out == ""
    assert "p.h5" in err


def test_resume_after_cut_connection_in_same_call(server):
    url, route = server.add("/cut.h5", PAYLOAD, mode="cut", cut_after=5000)
    path = pretrained.fetch(url, progress=False, retries=1)
    assert path.read_bytes() == PAYLOAD
    assert route.requests == [None, "bytes=5000-"]


def test_resume_after_cut_connection_on_next_run(server, cache):
    url, route = server.add("/cut.h5", PAYLOAD, mode="cut", cut_after=7000)
    final = pretrained.cached_path(url)
    with pytest.raises(UserError) as err:
        pretrained.fetch(url, progress=False, retries=0)
    assert "resume" in str(err.value) and "\n" not in str(err.value)
    assert not final.exists()
    part = final.with_name(final.name + ".part")
    assert part.read_bytes() == PAYLOAD[:7000]

    path = pretrained.fetch(url, progress=False, retries=0)
    assert path == final and path.read_bytes() == PAYLOAD
    assert route.requests == [None, "bytes=7000-"]
    assert not part.exists()


def test_server_ignoring_range_restarts_cleanly(server):
    url, route = server.add("/norange.h5", PAYLOAD, mode="normal")
    final = pretrained.cached_path(url)
    final.with_name(final.name + ".part").write_bytes(b"stale bytes from another file")
    path = pretrained.fetch(url, progress=False)
    assert path.read_bytes() == PAYLOAD  # not stale + PAYLOAD
    assert route.requests == ["bytes=29-"]


def test_oversized_part_gets_416_and_restarts(server):
    url, route = server.add("/big.h5", PAYLOAD, mode="range")
    final = pretrained.cached_path(url)
    final.with_name(final.name + ".part").write_bytes(b"x" * (len(PAYLOAD) + 10))
    assert pretrained.fetch(url, progress=False).read_bytes() == PAYLOAD
    assert route.requests == [f"bytes={len(PAYLOAD) + 10}-", None]


def test_sha256_argument_for_urls(server, cache):
    url, _ = server.add("/pinned.h5", PAYLOAD)
    with pytest.raises(UserError, match="sha256"):
        pretrained.fetch(url, sha256=sha(b"other"), progress=False)
    assert leftovers(cache) == [] and not pretrained.cached_path(url).exists()
    assert pretrained.fetch(url, sha256=sha(PAYLOAD), progress=False).read_bytes() == PAYLOAD


@pytest.mark.parametrize("code", ["404", "500"])
def test_http_errors_are_one_line(server, cache, code):
    url, route = server.add(f"/err{code}.h5", PAYLOAD, mode=code)
    with pytest.raises(UserError) as err:
        pretrained.fetch(url, progress=False)
    message = str(err.value)
    assert f"HTTP {code}" in message and url in message and "\n" not in message
    assert len(route.requests) == 1  # HTTP errors are not retried
    assert not pretrained.cached_path(url).exists()
    assert leftovers(cache) == []


def test_truncated_body_is_an_error(server, cache):
    url, route = server.add("/short.h5", PAYLOAD, mode="truncated")
    final = pretrained.cached_path(url)
    with pytest.raises(UserError) as err:
        pretrained.fetch(url, progress=False, retries=1)
    message = str(err.value)
    assert "truncated" in message and "\n" not in message
    assert not final.exists()
    # What arrived is kept only as .part, for a later resume.
    assert final.with_name(final.name + ".part").exists()
    assert len(route.requests) == 2


def test_wrong_hash_leaves_nothing_under_final_name(server, cache, monkeypatch):
    url, _ = server.add("/bad.h5", PAYLOAD)
    register(monkeypatch, "bad", url, sha(b"something else"))
    with pytest.raises(UserError) as err:
        pretrained.get_weights("bad", progress=False)
    assert "sha256" in str(err.value) and "\n" not in str(err.value)
    assert not (cache / "weights" / "bad.h5").exists()
    assert leftovers(cache) == []


def test_checksum_recorded_and_tampering_detected(server, cache):
    url, route = server.add("/tofu.h5", PAYLOAD)
    path = pretrained.fetch(url, progress=False)
    record = json.loads((cache / "weights" / "checksums.json").read_text())
    (entry,) = record.values()
    assert entry == {"url": url, "sha256": sha(PAYLOAD)}

    path.write_bytes(PAYLOAD[:-1] + b"\x00")
    with pytest.raises(UserError) as err:
        pretrained.fetch(url, progress=False)
    message = str(err.value)
    assert "delete" in message and str(path) in message and "\n" not in message
    assert len(route.requests) == 1


def test_recorded_checksum_applies_to_a_fresh_download(server, cache):
    url, route = server.add("/changed.h5", PAYLOAD)
    path = pretrained.fetch(url, progress=False)
    path.unlink()
    route.body = b"upstream silently changed"
    with pytest.raises(UserError) as err:
        pretrained.fetch(url, progress=False)
    assert "checksums.json" in str(err.value)
    assert not path.exists() and leftovers(cache) == []


def test_user_placed_file_is_used_and_recorded(cache, monkeypatch):
    register(monkeypatch, "toy", "http://127.0.0.1:9/toy.h5")
    final = pretrained.cached_path("toy")
    final.write_bytes(PAYLOAD)
    assert pretrained.get_weights("toy") == final
    record = json.loads((cache / "weights" / "checksums.json").read_text())
    assert record["toy.h5"]["sha256"] == sha(PAYLOAD)


# ------------------------------------------------------------- local / offline


def test_local_weights_used_without_network(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("network used")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    local = tmp_path / "mine.h5"
    local.write_bytes(b"weights")
    assert pretrained.get_weights("x-umx", weights=str(local)) == local

    folder = tmp_path / "umx-dir" / "nested"
    folder.mkdir(parents=True)
    for name in ("bass.h5", "drums.h5", "vocals.h5", "other.h5"):
        (folder / name).write_bytes(b"w")
    assert pretrained.get_weights("umx", weights=str(tmp_path / "umx-dir")) == folder

    with pytest.raises(UserError, match="no such file"):
        pretrained.get_weights("x-umx", weights=str(tmp_path / "missing.h5"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="expected files"):
        pretrained.get_weights("umx", weights=str(empty))
    with pytest.raises(UserError, match="needs a folder"):
        pretrained.get_weights("umx", weights=str(local))


def test_offline_message_names_url_and_destination(monkeypatch):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    url = f"http://127.0.0.1:{port}/offline.h5"
    register(monkeypatch, "offline", url)
    with pytest.raises(UserError) as err:
        pretrained.get_weights("offline", progress=False)
    message = str(err.value)
    assert url in message
    assert str(pretrained.cached_path("offline")) in message
    assert "--model PATH" in message
    assert "\n" not in message


def test_a_local_copy_is_used_without_network_and_the_cache_otherwise(server, tmp_path,
                                                                        monkeypatch):
    url, _ = server.add("/default.h5", PAYLOAD)
    register(monkeypatch, "default", url)
    local = tmp_path / "own.h5"
    local.write_bytes(b"own")
    assert pretrained.get_weights("default", weights=str(local)) == local
    assert pretrained.get_weights("default", progress=False).read_bytes() == PAYLOAD


def test_unknown_name_lists_known_ones():
    with pytest.raises(UserError, match="x-umx"):
        pretrained.get_weights("no-such-model")
    with pytest.raises(UserError, match="http"):
        pretrained.fetch("ftp://example.invalid/x.h5")


# ------------------------------------------------------------------------- zips


MSS = ("bass.h5", "drums.h5", "vocals.h5", "other.h5")


def test_zip_is_extracted_atomically(server, cache, monkeypatch):
    data = make_zip([(f"umx/{n}", n.encode()) for n in MSS])
    url, route = server.add("/mss.zip", data)
    register(monkeypatch, "mss", url, members=MSS)
    folder = pretrained.get_weights("mss", progress=False)
    assert folder == cache / "weights" / "mss" / "umx"
    assert sorted(p.name for p in folder.iterdir()) == sorted(MSS)
    assert (folder / "vocals.h5").read_bytes() == b"vocals.h5"
    assert pretrained.get_weights("mss", progress=False) == folder
    assert len(route.requests) == 1
    assert [p.name for p in (cache / "weights").iterdir() if p.name.startswith(".")] == []


def test_zip_missing_members_is_an_error(server, monkeypatch):
    url, _ = server.add("/partial.zip", make_zip([("bass.h5", b"b")]))
    register(monkeypatch, "partial", url, members=MSS)
    with pytest.raises(UserError, match="expected files"):
        pretrained.get_weights("partial", progress=False)


def _symlink_entry():
    info = zipfile.ZipInfo("link")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.mark.parametrize("evil", ["../evil", "sub/../../evil", "ABS", "..\\evil", "LINK"])
def test_zip_escaping_entries_are_rejected(server, cache, tmp_path, evil):
    outside = tmp_path / "outside"
    outside.mkdir()
    if evil == "ABS":
        entries = [("ok.h5", b"ok"), (str(outside / "evil"), b"pwned")]
    elif evil == "LINK":
        entries = [("ok.h5", b"ok"), (_symlink_entry(), str(outside)), ("link/evil", b"pwned")]
    else:
        entries = [("ok.h5", b"ok"), (evil, b"pwned")]
    url, _ = server.add("/evil.zip", make_zip(entries))
    with pytest.raises(UserError) as err:
        pretrained.fetch(url, progress=False)
    assert "refusing to extract" in str(err.value) and "\n" not in str(err.value)
    target = pretrained.cached_path(url)
    assert not target.exists()
    assert [p for p in tmp_path.rglob("*evil") if p.name != "evil.zip"] == []
    assert list(outside.iterdir()) == []
    assert not (cache / "weights" / "ok.h5").exists()
    assert [p.name for p in target.parent.iterdir() if p.is_dir()] == []  # no temp dirs left


def test_safe_extract_direct(tmp_path):
    archive = tmp_path / "a.zip"
    archive.write_bytes(make_zip([("d/x.txt", b"x"), ("y.txt", b"y")]))
    out = pretrained.safe_extract(archive, tmp_path / "out")
    assert (out / "d" / "x.txt").read_bytes() == b"x"
    archive.write_bytes(b"not a zip")
    with pytest.raises(UserError, match="not a readable zip"):
        pretrained.safe_extract(archive, tmp_path / "out2")


# --------------------------------------------------------------------- registry


def test_registry_entries_are_consistent():
    expected = {"x-umx", "umx", "umxhq", "d3net-mss", "d3net-s", "d3net-l",
                "d3net-s-backbone", "d3net-l-backbone"}
    assert expected <= set(REGISTRY)
    for name, entry in REGISTRY.items():
        assert entry.name == name
        assert entry.url.startswith("https://nnabla.org/pretrained-models/")
        assert entry.url.endswith("/" + entry.filename)
        assert entry.description and entry.source
        assert entry.sha256 is None or len(entry.sha256) == 64
        assert bool(entry.members) == entry.is_zip
    assert REGISTRY["x-umx"].filename == "x-umx.h5"
    assert REGISTRY["umxhq"].filename == "umxhq.zip"


def test_cli_list(capsys, monkeypatch):
    # Hermetic: no HEAD requests for download sizes, even where the network is reachable.
    monkeypatch.setattr(pretrained, "_published_size", lambda url, timeout: None)
    assert pretrained.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "x-umx" in out and "d3net-l" in out
