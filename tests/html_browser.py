"""Helpers for tests of the HTML reports: a link/image collector and a headless-Chromium probe."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from camscope.report import CSP


class Collect(HTMLParser):
    """Collects <img> sources, other links and scripts of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[str] = []
        self.links: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a.get("src") or "")
        if tag == "script":
            self.scripts += 1
        for key in ("href", "src", "action"):
            if key in a and tag != "img":
                self.links.append(a[key])


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


# Injected into a copy of the page only (the product page has no script): records errors and
# whether every <img> decoded, then writes the result into the DOM for --dump-dom.
_PROBE = """<script>
window.__errs = [];
window.addEventListener('error', function (e) {
  var t = e.target;
  var what = (t && (t.src || t.href)) || '?';
  window.__errs.push(e.message || ('failed to load ' + what).slice(0, 80));
}, true);
document.addEventListener('securitypolicyviolation', function (e) {
  window.__errs.push('CSP: ' + e.violatedDirective + ' ' + String(e.blockedURI).slice(0, 80));
});
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var broken = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                   .map(function (i) { return i.alt; });
  var pre = document.createElement('pre');
  pre.id = 'camscope-probe';
  pre.textContent = JSON.stringify({images: imgs.length, broken: broken, errors: window.__errs});
  document.body.appendChild(pre);
});
</script>"""


def browser_check(page: Path, tmp_path: Path) -> dict:
    """Load a probe copy of ``page`` from file:// in headless Chromium; return the probe result."""
    binary = chromium()
    if binary is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium); HTML not rendered")
    text = page.read_text(encoding="utf-8")
    csp = f'content="{CSP}"'
    assert csp in text
    probe = text.replace(csp, f"content=\"{CSP}; script-src 'unsafe-inline'\"")
    probe = probe.replace("</title>", "</title>" + _PROBE, 1)
    harness = tmp_path / "probe.html"
    harness.write_text(probe, encoding="utf-8")
    profile = tmp_path / "chromium-profile"
    cmd = [
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
        "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", "--dump-dom",
        harness.as_uri(),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    match = re.search(r'<pre id="camscope-probe">(.*?)</pre>', proc.stdout, re.S)
    assert match, f"no probe result; chromium rc={proc.returncode}\n{proc.stderr[-3000:]}"
    console = [ln for ln in proc.stderr.splitlines() if "CONSOLE" in ln and "probe.html" in ln]
    result = json.loads(html.unescape(match.group(1)))
    result["console"] = console
    return result
