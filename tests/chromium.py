"""Load a local HTML page in headless Chromium and report what a reviewer would see.

Drives Debian's ``chromium`` (``/usr/bin/chromium``, or ``$SMEARSCAN_CHROMIUM``) over
the DevTools protocol on a pipe (``--remote-debugging-pipe``: NUL-separated JSON on
file descriptors 3 and 4), so it needs nothing beyond the Python standard library.
Tests using it skip when the browser is absent.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

CHROMIUM = Path(os.environ.get("SMEARSCAN_CHROMIUM", "/usr/bin/chromium"))
MISSING = f"{CHROMIUM} not found (apt-get install chromium)"


class _DevTools:
    """Minimal Chrome DevTools protocol client over ``--remote-debugging-pipe``."""

    def __init__(self, profile: Path) -> None:
        to_browser, self._w = os.pipe()
        self._r, from_browser = os.pipe()

        def _wire() -> None:  # the browser reads fd 3 and writes fd 4
            os.dup2(to_browser, 3)
            os.dup2(from_browser, 4)

        args = [
            str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
            "--remote-debugging-pipe", "about:blank",
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            args,
            pass_fds=(3, 4),
            preexec_fn=_wire,  # the test process is single-threaded here
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser)
        os.close(from_browser)
        self._buf = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []
        self.session: str | None = None

    def call(self, method: str, timeout: float = 20.0, **params: Any) -> dict[str, Any]:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if self.session:
            msg["sessionId"] = self.session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        reply = self.wait(lambda m: m.get("id") == self._id, timeout)
        assert "error" not in reply, f"{method}: {reply['error']}"
        return reply["result"]

    def wait(self, pred: Any, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                msg = json.loads(raw)
                if pred(msg):
                    return msg
                self.events.append(msg)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer from chromium")
            if select.select([self._r], [], [], min(left, 0.5))[0]:
                chunk = os.read(self._r, 1 << 20)
                if not chunk:
                    raise EOFError("chromium closed the DevTools pipe")
                self._buf += chunk

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        os.close(self._w)
        os.close(self._r)


_PAGE_STATE = """(async () => {
  const imgs = Array.from(document.images);
  const loaded = await Promise.all(imgs.map(i => { i.loading = 'eager';
    return i.decode().then(() => i.naturalWidth > 0, () => false); }));
  return {articles: document.querySelectorAll('article.slide').length,
          failed: document.querySelectorAll('article.failed pre.error').length,
          images: imgs.map((i, k) => [i.src, loaded[k]]),
          links: Array.from(document.querySelectorAll('article a')).map(a => a.href)};
})()"""


@dataclass
class PageView:
    """What the page showed: ``state`` (from ``_PAGE_STATE``), console errors, a screenshot."""

    state: dict[str, Any]
    errors: list[dict[str, Any]]
    screenshot_png: bytes


def load_page(page: Path, profile: Path) -> PageView:
    """Open ``page`` (a local file) at 1280x900, wait for load, collect state and errors."""
    import base64

    browser = _DevTools(profile)
    try:
        target = browser.call("Target.createTarget", url="about:blank")["targetId"]
        attached = browser.call("Target.attachToTarget", targetId=target, flatten=True)
        browser.session = attached["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            browser.call(f"{domain}.enable")
        browser.call("Emulation.setDeviceMetricsOverride", width=1280, height=900,
                     deviceScaleFactor=1, mobile=False)  # fmt: skip
        nav = browser.call("Page.navigate", url=page.as_uri())
        assert "errorText" not in nav, nav
        browser.wait(lambda m: m.get("method") == "Page.loadEventFired")
        state = browser.call(
            "Runtime.evaluate", expression=_PAGE_STATE, awaitPromise=True, returnByValue=True
        )["result"]["value"]
        shot = browser.call("Page.captureScreenshot", format="png")["data"]
    finally:
        browser.close()
    errors = [
        m["params"]
        for m in browser.events
        if (m.get("method") == "Log.entryAdded" and m["params"]["entry"]["level"] == "error")
        or (m.get("method") == "Runtime.consoleAPICalled" and m["params"]["type"] == "error")
        or m.get("method") == "Runtime.exceptionThrown"
    ]
    return PageView(state, errors, base64.b64decode(shot))


def file_of(url: str) -> Path:
    """Local path of a ``file://`` URL (asserts the scheme)."""
    parsed = urlparse(url)
    assert parsed.scheme == "file", url
    return Path(url2pathname(parsed.path))
