"""Test support: open a local HTML file in a real headless Chromium (Debian's `chromium` package).

Driven by Playwright's Python API with `executable_path` set to the system
Chromium: Playwright never downloads a browser here (no `playwright install`).
Each page gets a fresh profile directory and Chromium's network features that
would call home are off. `open_page` records console errors, page errors,
failed requests and every request for anything but the page itself or a
`data:` URI.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

__all__ = ["CHROMIUM", "INSTALL_CHROMIUM", "chromium_path", "PageLog", "open_page"]

CHROMIUM = ("/usr/bin/chromium", "chromium", "chromium-browser")
INSTALL_CHROMIUM = "sudo apt-get install -y chromium"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
)


def chromium_path() -> str | None:
    for name in CHROMIUM:
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class PageLog:
    console_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    other_requests: list[str] = field(default_factory=list)


@contextlib.contextmanager
def open_page(html: Path, profile: Path, width: int = 1400, height: int = 1000) -> Iterator[tuple[object, PageLog]]:
    """(Playwright page, its log) with `html` loaded from a file:// URL, in a fresh headless Chromium."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    if executable is None:
        raise FileNotFoundError(f"no chromium: {INSTALL_CHROMIUM}")
    url = html.resolve().as_uri()
    log = PageLog()
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile), executable_path=executable, headless=True, args=list(FLAGS),
            viewport={"width": width, "height": height}, device_scale_factor=1, offline=True,
        )
        try:
            page = context.new_page()
            page.on("console", lambda m: log.console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: log.console_errors.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: log.failed_requests.append(f"{r.url[:120]}: {r.failure}"))
            page.on("request", lambda r: None if r.url == url or r.url.startswith("data:") else log.other_requests.append(r.url[:120]))
            page.goto(url, wait_until="load")
            yield page, log
        finally:
            context.close()
