"""Render an HTML report in headless Chromium (installed by tools/setup.sh from Debian's
packages) and report whether every image and audio element loaded: the check the report
tests make that a page is really self-contained and playable."""
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

# A copy of the page gets this script; Chromium's virtual time lets media metadata load before
# the DOM is dumped.
_CHECKER = """<script>
function reportMedia() {
  const images = [...document.images].map(i => i.complete && i.naturalWidth > 0);
  const audio = [...document.querySelectorAll('audio')]
    .map(a => a.readyState >= 1 && a.duration > 0);
  const out = document.createElement('pre');
  out.id = 'media-check';
  out.textContent = JSON.stringify({images, audio});
  document.body.appendChild(out);
}
window.addEventListener('load', () => setTimeout(reportMedia, 1000));
</script>"""

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


def chromium():
    """Path of the Chromium binary; fails the calling test when it is missing."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise AssertionError("chromium is not installed (tools/setup.sh installs it as root)")


def media_load_check(page, budget_ms=10000, timeout=120):
    """``{"images": [bool], "audio": [bool]}``: for every ``<img>`` and ``<audio>`` of the HTML
    file ``page``, in document order, whether it loaded in Chromium (no network: the page must
    carry everything it shows)."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "page.html"
        text = Path(page).read_text(encoding="utf-8")
        copy.write_text(text.replace("</body>", _CHECKER + "</body>"), encoding="utf-8")
        proc = subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp}/profile",
                               f"--virtual-time-budget={budget_ms}", "--dump-dom",
                               copy.as_uri()], capture_output=True, text=True, timeout=timeout)
    found = re.search(r'<pre id="media-check">([^<]*)</pre>', proc.stdout)
    if not found:
        raise AssertionError(f"chromium did not render {page} (exit {proc.returncode}): "
                             f"{proc.stderr[-2000:]}")
    return json.loads(found.group(1).replace("&quot;", '"'))
