"""Headless Chromium for the UI tests: the DOM a single-page app renders, and screenshots of it.

Both UIs (MLflow, Prefect) draw everything with JavaScript after fetching from their REST API, so
the plain HTML says nothing; `chromium --dump-dom --virtual-time-budget=MS` runs the scripts, lets
the page fetch and render, and prints the DOM as it then is. Virtual time only advances while no
fetch is pending, so a slow server delays the dump instead of cutting it short; every call is still
bounded by a wall-clock timeout, after which the browser's whole process group is killed.

No new dependency: the DOM is parsed with html.parser into a small tree (`Node`), enough to say
"the row that links to version 3 has an element titled champion".

Flags: a fresh --user-data-dir per call and the --disable-* flags keep Chromium from reaching the
network (none here) or reusing state; --no-sandbox because tests and CI run as root.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio"]
WINDOW = (1600, 900)  # wide enough that MLflow's tables do not truncate next to its Assistant panel
DOCS_MAX_BYTES = 500_000  # what a committed PNG may weigh; above it, a 256-colour palette
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


def find() -> str | None:
    """The browser to use: $IWSFT_CHROMIUM if set, else the first of NAMES on PATH (None: skip the UI tests)."""
    if os.environ.get("IWSFT_CHROMIUM"):
        return shutil.which(os.environ["IWSFT_CHROMIUM"])
    return next((path for name in NAMES if (path := shutil.which(name))), None)


def _chromium(*args: str, timeout: float) -> str:
    binary = find()
    if binary is None:
        raise RuntimeError("no chromium on PATH (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        command = [binary, *FLAGS, f"--user-data-dir={profile}", *args]
        # its own session: on timeout the browser, its zygote and renderers go together, by group id
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   start_new_session=True)
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise TimeoutError(f"chromium took over {timeout:.0f} s: {' '.join(args)}") from None
        if process.returncode != 0:
            raise RuntimeError(f"chromium exited {process.returncode}: {' '.join(args)}\n{err[-3000:]}")
        return out


# ---------------------------------------------------------------- the rendered DOM

@dataclass
class Node:
    tag: str
    attrs: dict
    children: list = field(default_factory=list)  # Nodes and strings

    def text(self) -> str:
        """The visible text, one space between pieces (no script or style)."""
        parts = []
        for child in self.children:
            if isinstance(child, str):
                parts.append(child.strip())
            elif child.tag not in ("script", "style", "noscript"):
                parts.append(child.text())
        return " ".join(p for p in parts if p)

    def iter(self):
        yield self
        for child in self.children:
            if isinstance(child, Node):
                yield from child.iter()

    def find_all(self, tag: str | None = None, cls: str | None = None, **attrs) -> list[Node]:
        """Descendants (self included) by tag, by one class name, and by exact attribute values."""
        found = []
        for node in self.iter():
            if tag and node.tag != tag:
                continue
            if cls and cls not in (node.attrs.get("class") or "").split():
                continue
            if all(node.attrs.get(key.replace("_", "-")) == value for key, value in attrs.items()):
                found.append(node)
        return found


class _TreeBuilder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        node = Node(tag, {key: value or "" for key, value in attrs})
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag, attrs):  # <path/> in SVG
        self.stack[-1].children.append(Node(tag, {key: value or "" for key, value in attrs}))

    def handle_endtag(self, tag):
        # close up to the matching open tag; a stray end tag (none open) is ignored
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data):
        self.stack[-1].children.append(data)


def parse(html: str) -> Node:
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    return builder.root


def render(url: str, ready, budgets_ms=(10_000, 30_000, 60_000), timeout: float = 90) -> Node:
    """The page's DOM once `ready(dom)` holds, with a longer virtual-time budget on each try.

    `ready` says the app has drawn the thing under test (a table row, a page heading), not that the
    thing is right: the caller asserts on that, so a wrong page fails at once instead of retrying.
    Raises AssertionError with the page's text when it never gets ready.
    """
    dom = None
    for budget in budgets_ms:
        dom = parse(_chromium(f"--window-size={WINDOW[0]},{WINDOW[1]}", f"--virtual-time-budget={budget}",
                              "--dump-dom", url, timeout=timeout))
        if ready(dom):
            return dom
    raise AssertionError(f"{url} did not render within {budgets_ms[-1]} ms of virtual time; it shows:\n"
                         f"{dom.text()[:2000]}")


def screenshot(url: str, out: Path, budget_ms: int = 20_000, window=WINDOW, timeout: float = 90) -> Path:
    """A PNG of the page after `budget_ms` of virtual time, shrunk to a palette if over DOCS_MAX_BYTES."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)  # a PNG left from before must not pass for this one
    _chromium(f"--window-size={window[0]},{window[1]}", f"--virtual-time-budget={budget_ms}",
              f"--screenshot={out}", url, timeout=timeout)
    if not out.is_file():
        raise AssertionError(f"chromium wrote no screenshot of {url}")
    if out.stat().st_size > DOCS_MAX_BYTES:
        from PIL import Image

        Image.open(out).convert("RGB").quantize(256).save(out, optimize=True)
    return out


def looks_drawn(png: Path, window=WINDOW) -> bool:
    """The PNG has the window's size and is not one flat colour (a blank or an error-free white page)."""
    from PIL import Image

    with Image.open(png) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
        return image.size == tuple(window) and (colours is None or len(colours) > 16)
