"""A tiny Chrome DevTools Protocol client over ``websockets`` for the page tests: start headless Chromium on a
URL, evaluate JavaScript, wait for a condition, set a file input, take a screenshot."""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    return next((path for name in CANDIDATES if (path := shutil.which(name))), None)


class Browser:
    """Headless Chromium showing ``url``, driven through the DevTools protocol of its page."""

    def __init__(self, url: str, *, flags: tuple[str, ...] = (), start_timeout: float = 20.0) -> None:
        binary = find_chromium()
        if binary is None:
            raise FileNotFoundError("no chromium binary on PATH")
        self.profile = Path(tempfile.mkdtemp(prefix="transduce-chromium-"))
        self.log = self.profile / "chromium.log"  # a file, not a pipe: a chatty browser never blocks on it
        self.process = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
             "--disable-dev-shm-usage", "--remote-debugging-port=0", f"--user-data-dir={self.profile}",
             "--window-size=1280,900", *flags, url],
            stdout=subprocess.DEVNULL, stderr=self.log.open("wb"))
        self._ids = itertools.count(1)
        try:
            self.ws = self._attach(url, start_timeout)
        except BaseException:
            self.close()
            raise

    def _attach(self, url: str, timeout: float) -> ClientConnection:
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"chromium exited with {self.process.returncode}: {err}")
            if port_file.is_file() and (lines := port_file.read_text().split()):
                with urllib.request.urlopen(f"http://127.0.0.1:{lines[0]}/json/list", timeout=5) as r:
                    pages = [t for t in json.load(r) if t.get("type") == "page"]
                if pages:
                    return connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=10)
            time.sleep(0.1)
        raise TimeoutError(f"chromium did not open {url} within {timeout} s")

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """One protocol command -> its result (events arriving meanwhile are dropped)."""
        msg_id = next(self._ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv(timeout=30))
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float, what: str = "") -> Any:
        """Poll ``expression`` until it is truthy; its value. A timeout error shows the page's text."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if value := self.evaluate(expression):
                return value
            time.sleep(0.1)
        shown = " | ".join(str(self.evaluate("document.body.innerText")).split("\n"))
        raise TimeoutError(f"{what or expression} not true within {timeout} s; the page shows: {shown}")

    def set_files(self, selector: str, *paths: Path) -> None:
        """Choose ``paths`` in the file input ``selector`` (fires its change event)."""
        handle = self.send("Runtime.evaluate", expression=f"document.querySelector({json.dumps(selector)})")
        self.send("DOM.setFileInputFiles", files=[str(p) for p in paths], objectId=handle["result"]["objectId"])

    def screenshot(self, path: Path) -> None:
        """The page's content (its body's box, not the empty window below it) as a PNG."""
        width, height = self.evaluate("[innerWidth, Math.ceil(document.body.getBoundingClientRect().bottom) + 8]")
        clip = {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}
        data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True, clip=clip)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        if getattr(self, "ws", None) is not None:
            self.ws.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
