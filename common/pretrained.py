"""Pretrained weights: a registry of the officially published files and a verified
download cache.

Typical use in an entry script whose ``--model`` takes a published name or a path::

    path = get_weights("x-umx")                     # cached, else downloaded and verified
    path = get_weights("x-umx", weights="my.h5")    # a local copy instead (no network)

Messages that tell the user how to pass a local copy name ``--model PATH``, the flag of
every inference and evaluation script.

Guarantees of the cache (``$NNABLA_RESEARCH_CACHE/weights`` by default):

* a file only ever appears under its final name after it was downloaded completely
  and its sha256 checked; downloads go to ``<name>.part`` and are moved with
  :func:`os.replace`;
* an interrupted download stays in ``<name>.part`` and the next attempt resumes it
  with an HTTP ``Range`` request (a server that ignores ``Range`` is handled by
  starting over);
* where no checksum is published, the sha256 of the first complete download is
  recorded in ``weights/checksums.json`` and every later use is checked against it;
* zip archives are extracted into a temporary folder next to the target and renamed
  into place; entries that would land outside the target are refused.

Problems the user can fix (offline, HTTP errors, wrong checksum, bad archive) raise
:class:`common.errors.UserError` with a one-line message.

Run ``python -m common.pretrained list`` to see the registry (name, size, cached or not,
what it is; :func:`list_models`, also ``--list-models`` on every inference command through
:func:`add_list_models_flag`) and ``python -m common.pretrained fetch NAME`` to download ahead
of time. :func:`pretrained_or_path` resolves the ``from_pretrained`` argument of the paper
packages' Python API (a published name or a path).
"""
import argparse
import dataclasses
import hashlib
import http.client
import json
import os
import re
import shutil
import stat
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from pathlib import Path

from tqdm import tqdm

from common.errors import UserError
from common.cli import run_cli
from common.paths import cache_dir

__all__ = [
    "Weights", "REGISTRY", "weights_dir", "cached_path", "fetch", "get_weights",
    "safe_extract", "sha256_file", "list_models", "add_list_models_flag",
    "pretrained_or_path",
]

CHECKSUMS_FILE = "checksums.json"
CHUNK_SIZE = 1 << 16
DEFAULT_TIMEOUT = 60.0
DEFAULT_RETRIES = 2
# Seconds to wait before retry n (multiplied by n); tests set it to 0.
RETRY_DELAY = 1.0
_USER_AGENT = "nnabla-research-papers/0.1 (Python urllib)"
_EXTRACT_MARKER = ".source-sha256"

_UPSTREAM = "sony/ai-research-code@cfe96dfe"
_MSS_TARGETS = ("bass.h5", "drums.h5", "vocals.h5", "other.h5")
# The official separate_with_openvino.py reads <model dir>/<source>.onnx for these four.
_MSS_ONNX = ("vocals.onnx", "bass.onnx", "drums.onnx", "other.onnx")


@dataclasses.dataclass(frozen=True)
class Weights:
    """One downloadable weights file.

    ``sha256`` is ``None`` where upstream publishes no checksum (the first download
    is then recorded and enforced afterwards). ``members`` lists, for zip archives,
    the files that must be present after extraction; ``source`` says where the URL
    is documented.
    """

    name: str
    url: str
    filename: str
    sha256: str | None
    description: str
    source: str = ""
    members: tuple[str, ...] = ()

    @property
    def is_zip(self):
        return self.filename.lower().endswith(".zip")


def _entry(name, url, sha256, description, source, members=()):
    filename = urllib.parse.unquote(url.rsplit("/", 1)[-1])
    return Weights(name, url, filename, sha256, description, source, tuple(members))


_NNABLA = "https://nnabla.org/pretrained-models"

REGISTRY: dict[str, Weights] = {
    e.name: e
    for e in (
        _entry("x-umx", f"{_NNABLA}/ai-research-code/x-umx/x-umx.h5", None,
               "X-UMX (CrossNet-Open-Unmix) trained on MUSDB18; one .h5 holding all four "
               "targets, the model behind the paper's scores",
               f"{_UPSTREAM} x-umx/x-umx.md (linked from x-umx/README.md)"),
        _entry("umx", f"{_NNABLA}/open-unmix-nnabla/umx.zip", None,
               "Open-Unmix (UMX) trained on MUSDB18 (AAC, 16 kHz bandwidth); zip with one "
               ".h5 per target",
               f"{_UPSTREAM} x-umx/umx.md (linked from x-umx/README.md)", _MSS_TARGETS),
        _entry("umxhq", f"{_NNABLA}/open-unmix-nnabla/umxhq.zip", None,
               "Open-Unmix (UMXHQ) trained on MUSDB18-HQ (full bandwidth); zip with one "
               ".h5 per target",
               f"{_UPSTREAM} x-umx/umx.md (linked from x-umx/README.md)", _MSS_TARGETS),
        _entry("d3net-mss", f"{_NNABLA}/ai-research-code/d3net/mss/d3net-mss.zip", None,
               "D3Net music source separation; zip with one .h5 per target "
               "(bass, drums, vocals, other)",
               f"{_UPSTREAM} d3net/music-source-separation/README.md", _MSS_TARGETS),
        _entry("d3net-openvino", f"{_NNABLA}/ai-research-code/d3net/mss/d3net-openvino.zip",
               None,
               "D3Net music source separation as ONNX files for the official OpenVINO script "
               "(separate_with_openvino.py); zip with one .onnx per target",
               f"{_UPSTREAM} d3net/music-source-separation/README.md", _MSS_ONNX),
        _entry("d3net-s",
               f"{_NNABLA}/ai-research-code/d3net/semantic-segmentation/D3Net-S.h5", None,
               "D3Net-S semantic segmentation on Cityscapes (79.9 mIoU by the official README)",
               f"{_UPSTREAM} d3net/semantic-segmentation/README.md"),
        _entry("d3net-l",
               f"{_NNABLA}/ai-research-code/d3net/semantic-segmentation/D3Net-L.h5", None,
               "D3Net-L semantic segmentation on Cityscapes (81.0 mIoU by the official README)",
               f"{_UPSTREAM} d3net/semantic-segmentation/README.md"),
        _entry("d3net-s-backbone",
               f"{_NNABLA}/ai-research-code/d3net/semantic-segmentation/"
               "D3Net-S-pretrained-backbone.h5", None,
               "D3Net-S backbone pretrained on ImageNet, initialisation for Cityscapes training",
               f"{_UPSTREAM} d3net/semantic-segmentation/README.md"),
        _entry("d3net-l-backbone",
               f"{_NNABLA}/ai-research-code/d3net/semantic-segmentation/"
               "D3Net-L-pretrained-backbone.h5", None,
               "D3Net-L backbone pretrained on ImageNet, initialisation for Cityscapes training",
               f"{_UPSTREAM} d3net/semantic-segmentation/README.md"),
    )
}


class _Interrupted(Exception):
    """The transfer stopped early; what arrived is in the ``.part`` file."""


# --------------------------------------------------------------------------- paths


def weights_dir(cache_root=None):
    """Folder holding downloaded weights: ``<cache_root>/weights`` if given, else
    ``cache_dir('weights')`` (which honours ``$NNABLA_RESEARCH_CACHE``)."""
    if cache_root is None:
        return cache_dir("weights")
    path = Path(cache_root).expanduser() / "weights"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _lookup(name_or_url, sha256=None):
    """Registry entry for a name, or an ad-hoc entry for an http(s) URL."""
    if name_or_url in REGISTRY:
        return REGISTRY[name_or_url], ""
    if "://" not in name_or_url:
        known = ", ".join(sorted(REGISTRY))
        raise UserError(f"unknown weights '{name_or_url}' (known: {known}; or give an http(s) URL)")
    parsed = urllib.parse.urlparse(name_or_url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise UserError(f"cannot download '{name_or_url}': only http:// and https:// URLs "
                        "are supported")
    filename = urllib.parse.unquote(parsed.path.rsplit("/", 1)[-1]) or "download"
    filename = filename.replace("\\", "_")
    if filename in (".", ".."):
        filename = "download"
    # URLs get a folder of their own so they never collide with registry files.
    subdir = "url-" + hashlib.sha256(name_or_url.encode()).hexdigest()[:12]
    return Weights(filename, name_or_url, filename, sha256, "", ""), subdir


def _file_path(entry, subdir, cache_root):
    folder = weights_dir(cache_root)
    if subdir:
        folder = folder / subdir
        folder.mkdir(exist_ok=True)
    return folder / entry.filename


def cached_path(name_or_url, cache_root=None):
    """Where ``fetch`` keeps ``name_or_url``: the file itself, or for zip archives
    the folder they are extracted into. The path may not exist yet."""
    entry, subdir = _lookup(name_or_url)
    path = _file_path(entry, subdir, cache_root)
    return _extract_dir(path) if entry.is_zip else path


def _extract_dir(zip_path):
    stem = zip_path.name[:-4] if zip_path.name.lower().endswith(".zip") else zip_path.name
    return zip_path.with_name(stem)


# ----------------------------------------------------------------------- checksums


def sha256_file(path):
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _load_checksums(wdir):
    path = wdir / CHECKSUMS_FILE
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read recorded checksums {path} ({exc}); fix or delete that "
                        "file") from None
    if not isinstance(data, dict):
        raise UserError(f"recorded checksums {path} are not a JSON object; fix or delete that file")
    return data


def _record_checksum(wdir, key, url, digest):
    data = _load_checksums(wdir)
    data[key] = {"url": url, "sha256": digest}
    fd, tmp = tempfile.mkstemp(prefix=".checksums.", suffix=".tmp", dir=wdir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, wdir / CHECKSUMS_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------------ download


def _one_line(text):
    return " ".join(str(text).split())


def _offline_message(url, final, reason):
    return (f"cannot download {url} ({_one_line(reason)}); fetch that URL on a machine with "
            f"internet access and save it as {final}, or pass --model PATH")


def _download_once(url, part, final, progress, timeout, allow_restart=True):
    """One HTTP request appending to (or restarting) ``part``.

    Raises ``_Interrupted`` when the body stops early and ``UserError`` for HTTP
    errors and unreachable hosts.
    """
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": _USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and offset and allow_restart:
            # Our partial file does not fit the remote one: start from scratch.
            part.unlink()
            return _download_once(url, part, final, progress, timeout, allow_restart=False)
        raise UserError(f"download of {url} failed: HTTP {exc.code} "
                        f"{_one_line(exc.reason)}") from None
    except urllib.error.URLError as exc:
        raise UserError(_offline_message(url, final, exc.reason)) from None
    except (OSError, http.client.HTTPException) as exc:
        reason = _one_line(exc) or type(exc).__name__
        raise _Interrupted(f"download of {url} failed before any data arrived "
                           f"({reason})") from None

    with response:
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.strip().isdigit() else None
        if response.status == 206:
            match = re.match(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)",
                             response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != offset:
                part.unlink(missing_ok=True)
                raise _Interrupted(f"server sent an unexpected byte range for {url}; starting over")
            total = int(match.group(3)) if match.group(3) != "*" else None
            mode = "ab"
        else:
            # The server ignored our Range request (or none was sent): start clean.
            offset, mode, total = 0, "wb", length
        if total is None and length is not None:
            total = offset + length

        received = 0
        with open(part, mode) as out, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
            desc=final.name, file=sys.stderr, disable=not progress, leave=False,
        ) as bar:
            try:
                while True:
                    chunk = response.read(CHUNK_SIZE)
                    if not chunk:
                        break
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as exc:
                raise _Interrupted(f"download of {url} was interrupted after {offset + received} "
                                   f"bytes ({_one_line(exc) or type(exc).__name__})") from None
        expected = offset + length if length is not None else total
        if expected is not None and offset + received < expected:
            raise _Interrupted(f"download of {url} is truncated: got {offset + received} of "
                               f"{expected} bytes")


def _download(url, final, progress, timeout, retries):
    """Download ``url`` into ``<final>.part`` (resuming it if present); returns the
    ``.part`` path. The caller verifies and renames it."""
    part = final.with_name(final.name + ".part")
    attempt = 0
    while True:
        try:
            _download_once(url, part, final, progress, timeout)
            return part
        except _Interrupted as exc:
            if attempt >= retries:
                where = (f"the partial file is kept at {part} and the next run resumes it"
                         if part.exists() else "run again to retry")
                raise UserError(f"{exc}; {where}") from None
            attempt += 1
            time.sleep(RETRY_DELAY * attempt)


def _ensure_file(entry, final, wdir, key, progress, timeout, retries):
    """Return ``(final, sha256)`` once ``final`` exists and matches its checksum."""
    recorded = _load_checksums(wdir).get(key, {}).get("sha256")
    expected = entry.sha256 or recorded
    origin = "published" if entry.sha256 else "recorded on first download"

    if final.exists():
        actual = sha256_file(final)
        if expected and actual != expected.lower():
            raise UserError(
                f"cached file {final} does not match its {origin} sha256 (expected {expected}, "
                f"got {actual}); delete it and run again to download a fresh copy")
        if not expected:
            _record_checksum(wdir, key, entry.url, actual)
        return final, actual

    part = _download(entry.url, final, progress, timeout, retries)
    actual = sha256_file(part)
    if expected and actual != expected.lower():
        part.unlink(missing_ok=True)
        if entry.sha256:
            hint = "the download was discarded; try again later or pass --model PATH"
        else:
            hint = (f"the download was discarded; if upstream really changed the file, remove "
                    f"the entry '{key}' from {wdir / CHECKSUMS_FILE}")
        raise UserError(f"{entry.url} has sha256 {actual}, but the {origin} sha256 is "
                        f"{expected}; {hint}")
    os.replace(part, final)
    if not expected:
        _record_checksum(wdir, key, entry.url, actual)
    return final, actual


# ------------------------------------------------------------------------- archives


def _safe_parts(info, archive):
    """Path components of a zip entry, or UserError if it could escape the target."""
    name = info.filename
    if stat.S_ISLNK(info.external_attr >> 16):
        raise UserError(f"refusing to extract {archive}: entry '{name}' is a symbolic link")
    norm = name.replace("\\", "/")
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm):
        raise UserError(f"refusing to extract {archive}: entry '{name}' is an absolute path")
    parts = [p for p in norm.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UserError(f"refusing to extract {archive}: entry '{name}' points outside the "
                        "target folder")
    if not parts:
        raise UserError(f"refusing to extract {archive}: entry '{name}' has no usable name")
    return parts


def _within(path, root):
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def _commit_dir(tmp, target):
    """Move the finished folder ``tmp`` to ``target``, replacing an old copy."""
    try:
        os.replace(tmp, target)
        return
    except OSError:
        if not target.exists():
            raise
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.replace(target, old / target.name)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def safe_extract(zip_path, target_dir, marker=None):
    """Extract ``zip_path`` into ``target_dir`` (which appears atomically, complete).

    Every entry is checked before anything is written: absolute paths, ``..``
    components and symbolic links raise UserError. Extraction happens in a
    temporary folder next to ``target_dir`` that is renamed into place. ``marker``,
    if given, is written to ``target_dir/.source-sha256``. Returns ``target_dir``.
    """
    zip_path, target_dir = Path(zip_path), Path(target_dir)
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UserError(f"{zip_path} is not a readable zip archive ({_one_line(exc)}); "
                        "delete it and run again") from None
    with archive:
        infos = archive.infolist()
        plan = [(info, _safe_parts(info, zip_path)) for info in infos]
        target_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target_dir.name}.", suffix=".tmp",
                                    dir=target_dir.parent))
        try:
            root = tmp.resolve()
            for info, parts in plan:
                dest = root.joinpath(*parts)
                if not _within(dest.resolve(), root):  # defence in depth
                    raise UserError(f"refusing to extract {zip_path}: entry '{info.filename}' "
                                    f"points outside the target folder")
                if info.is_dir():
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with archive.open(info) as src, open(dest, "xb") as out:
                        shutil.copyfileobj(src, out, CHUNK_SIZE)
                except FileExistsError:
                    raise UserError(f"refusing to extract {zip_path}: entry '{info.filename}' "
                                    f"appears twice") from None
                except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
                    raise UserError(f"{zip_path} is corrupt ({_one_line(exc)}); delete it "
                                    "and run again") from None
            if marker is not None:
                (root / _EXTRACT_MARKER).write_text(marker + "\n", encoding="utf-8")
            _commit_dir(tmp, target_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target_dir


def _locate_members(root, members, what):
    """The folder under ``root`` holding all ``members`` (``root`` itself first)."""
    if not members:
        return root
    if all((root / m).is_file() for m in members):
        return root
    found = sorted(
        {p.parent for p in root.rglob(members[0])
         if all((p.parent / m).is_file() for m in members)},
        key=lambda p: (len(p.parts), str(p)),
    )
    if found:
        return found[0]
    raise UserError(f"{what} does not contain the expected files {', '.join(members)}")


def _ensure_extracted(entry, zip_path, digest):
    """Extract the verified archive unless an extraction of the same bytes exists."""
    target = _extract_dir(zip_path)
    marker = target / _EXTRACT_MARKER
    current = marker.read_text(encoding="utf-8").strip() if marker.is_file() else None
    if current != digest:
        safe_extract(zip_path, target, marker=digest)
    return _locate_members(target, entry.members, f"archive {zip_path}")


# -------------------------------------------------------------------------- public


def _local_weights(entry, weights):
    path = Path(weights).expanduser()
    if not path.exists():
        raise UserError(f"--model {weights}: no such file or directory")
    if entry is None:
        return path
    if entry.is_zip:
        if path.is_dir():
            return _locate_members(path, entry.members, f"--model {weights}")
        raise UserError(f"--model {weights} is a file, but '{entry.name}' needs a folder "
                        f"(extract the archive and pass that folder)")
    if path.is_dir():
        inner = path / entry.filename
        if inner.is_file():
            return inner
        raise UserError(f"--model {weights} is a folder without {entry.filename}; pass the "
                        "file itself")
    return path


def fetch(name_or_url, *, weights=None, sha256=None, cache_root=None, progress=True,
          timeout=DEFAULT_TIMEOUT, retries=DEFAULT_RETRIES):
    """Path to the weights ``name_or_url`` (a registry name or an http(s) URL).

    * ``weights``: a local file or folder given by the user (``--model PATH``); it is
      returned without any network access (UserError if it does not exist).
    * otherwise the cached copy is verified and returned, or downloaded (resumably,
      with a progress bar on stderr when ``progress``) and verified first.
    * ``sha256``: expected checksum for a URL, or for a registry entry without one.
    * ``cache_root``: use ``<cache_root>/weights`` instead of the default cache.
    * ``retries``: how often an interrupted transfer is resumed within this call.

    Zip archives are extracted; the folder holding the expected member files is
    returned.
    """
    entry, subdir = _lookup(name_or_url, sha256)
    if weights is not None:
        return _local_weights(entry if not subdir else None, weights)
    if sha256 is not None and not subdir:
        if entry.sha256 and sha256.lower() != entry.sha256.lower():
            raise UserError(f"sha256 given for '{name_or_url}' differs from the registry's")
        entry = dataclasses.replace(entry, sha256=sha256)
    final = _file_path(entry, subdir, cache_root)
    wdir = weights_dir(cache_root)
    key = final.relative_to(wdir).as_posix()
    path, digest = _ensure_file(entry, final, wdir, key, progress, timeout, retries)
    if entry.is_zip:
        return _ensure_extracted(entry, path, digest)
    return path


def get_weights(name, weights=None, *, cache_root=None, progress=True,
                timeout=DEFAULT_TIMEOUT, retries=DEFAULT_RETRIES):
    """Like :func:`fetch`, restricted to registry names."""
    if name not in REGISTRY:
        known = ", ".join(sorted(REGISTRY))
        raise UserError(f"unknown weights '{name}' (known: {known})")
    return fetch(name, weights=weights, cache_root=cache_root, progress=progress,
                 timeout=timeout, retries=retries)


def pretrained_or_path(name_or_path, published):
    """For the Python API's ``from_pretrained``: a name in ``published`` -> its cached (or
    downloaded) weights; anything else must be an existing file or folder."""
    if isinstance(name_or_path, str) and name_or_path in published:
        return get_weights(name_or_path)
    path = Path(name_or_path).expanduser()
    if not path.exists():
        raise UserError(f"{name_or_path}: no such file or folder, and not one of the published "
                        f"names {', '.join(published)}")
    return path


def refuse_published_name(path, published, factory):
    """A constructor given a published name instead of a path: one line pointing at
    ``factory`` (e.g. ``Separator.from_pretrained``), instead of "file not found"."""
    name = os.fspath(path)
    if name in published and not Path(name).exists():
        raise UserError(f"{name!r} is a published name, not a file: use "
                        f"{factory}({name!r}) to load it by name")


# ------------------------------------------------------------------ --list-models


def _human_size(n_bytes):
    size = float(n_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024


def _size_on_disk(path):
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*")
               if f.is_file() and f.name != _EXTRACT_MARKER)


def _published_size(url, timeout):
    """``Content-Length`` of ``url`` from a HEAD request, or ``None`` (offline, no header)."""
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": _USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length", "")
    except (OSError, http.client.HTTPException, ValueError):
        return None
    return int(length) if length.strip().isdigit() else None


def list_models(names=None, cache_root=None, file=None, timeout=5.0):
    """Print the published weights ``names`` (default: all): name, size, whether cached,
    and what they are. A cached entry's size is its size on disk; for the others one HEAD
    request asks the server for the download size (``unknown`` offline). Nothing is
    downloaded."""
    file = sys.stdout if file is None else file
    entries = [REGISTRY[name] for name in (names if names is not None else REGISTRY)]
    rows = []
    for entry in entries:
        path = cached_path(entry.name, cache_root)
        if path.exists():
            size, state = _human_size(_size_on_disk(path)), "cached"
        else:
            published = _published_size(entry.url, timeout)
            size = "unknown" if published is None else _human_size(published) + " download"
            state = "not cached"
        rows.append((entry.name, size, state, entry.description))
    header = ("name", "size", "state", "what it is")
    widths = [max(len(row[i]) for row in rows + [header]) for i in range(3)]
    print(f"published weights (cache: {weights_dir(cache_root)}):", file=file)
    for row in [header] + rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[3],
              file=file)
    if any(row[1] == "unknown" for row in rows):
        print("(unknown: the server could not be asked for the download size, e.g. offline)",
              file=file)


class _ListModelsAction(argparse.Action):
    def __init__(self, option_strings, dest, names, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)
        self.names = names

    def __call__(self, parser, namespace, values, option_string=None):
        list_models(self.names)
        parser.exit(0)


def add_list_models_flag(parser, names):
    """``--list-models``: print the published weights ``names`` (size, cached or not, what
    they are; :func:`list_models`) and exit."""
    parser.add_argument("--list-models", action=_ListModelsAction, names=tuple(names),
                        help="list the published weights this command accepts as --model "
                             "(size, whether cached, what they are) and exit")
    return parser


# ---------------------------------------------------------------------------- CLI


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m common.pretrained",
                                     description="List or pre-download published weights.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="show the registry and what is cached")
    get = sub.add_parser("fetch", help="download (and verify) weights into the cache")
    get.add_argument("names", nargs="+", metavar="NAME")
    args = parser.parse_args(argv)
    if args.command == "list":
        list_models()
        return 0
    for name in args.names:
        print(get_weights(name))
    return 0


if __name__ == "__main__":
    run_cli(main)
