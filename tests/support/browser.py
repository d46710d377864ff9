"""Headless Chromium for browser tests: Debian's ``chromium`` driven by Playwright for Python.

Playwright never downloads a browser here (the machines are offline): it launches the system
binary through ``executable_path``. With ``CI`` set, a missing browser fails the test instead of
skipping it, so CI cannot go green without having run the browser tests.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import Browser, ConsoleMessage, Page, Request, sync_playwright

from tests.support.requirements import unavailable

DEFAULT_CHROMIUM = "/usr/bin/chromium"

# Playwright manages --headless and a fresh --user-data-dir itself; the rest keeps Chromium quiet
# and offline (no component updates, sync, field trials or QUIC probes) and lets it run as root.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


def chromium_executable() -> str | None:
    """The Chromium binary to drive: $SOCIALNET_CHROMIUM, /usr/bin/chromium, or on PATH."""
    configured = os.environ.get("SOCIALNET_CHROMIUM")
    for candidate in (configured, DEFAULT_CHROMIUM, shutil.which("chromium")):
        if candidate and os.access(candidate, os.X_OK) and Path(candidate).is_file():
            return candidate
    return None


def require_chromium() -> str:
    """The Chromium path; a missing browser fails under CI and skips elsewhere."""
    path = chromium_executable()
    if path is not None:
        return path
    reason = (
        f"Chromium not found at $SOCIALNET_CHROMIUM or {DEFAULT_CHROMIUM}: "
        "install Debian's package (apt-get install chromium)"
    )
    unavailable(reason)


@contextlib.contextmanager
def launch_chromium(*, headless: bool = True) -> Iterator[Browser]:
    """A Playwright Browser over the system Chromium, closed on exit."""
    executable = require_chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable,
            headless=headless,
            args=list(CHROMIUM_ARGS),
            timeout=60_000,
        )
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class PageWatch:
    """What a page did that a test may want to forbid: errors and requests to other origins."""

    origin: str
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    foreign_requests: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        return [
            *(f"console error: {text}" for text in self.console_errors),
            *(f"uncaught exception: {text}" for text in self.page_errors),
            *(f"request to another origin: {url}" for url in self.foreign_requests),
        ]


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def expected_http_error(text: str) -> bool:
    # Chromium logs every 4xx answer this way; tests provoke some on purpose (409, 422, ...).
    return text.startswith("Failed to load resource: the server responded with a status of 4")


def watch_page(
    page: Page, origin: str, *, ignore_console: Callable[[str], bool] = expected_http_error
) -> PageWatch:
    """Record console errors (CSP violations too), uncaught exceptions and other-origin requests."""
    watch = PageWatch(origin=_origin(origin))

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" and not ignore_console(message.text):
            watch.console_errors.append(message.text)

    def on_request(request: Request) -> None:
        if request.url.startswith(("data:", "blob:", "about:")):
            return
        if _origin(request.url) != watch.origin:
            watch.foreign_requests.append(request.url)

    page.on("console", on_console)
    page.on("pageerror", lambda error: watch.page_errors.append(str(error)))
    page.on("request", on_request)
    return watch


@contextlib.contextmanager
def screenshots_on_failure(pages: Mapping[str, Page], directory: Path) -> Iterator[None]:
    """On an exception inside the block, save a full-page PNG of every page into ``directory``."""
    try:
        yield
    except BaseException as error:
        directory.mkdir(parents=True, exist_ok=True)
        saved = []
        for name, page in pages.items():
            target = directory / f"{name}.png"
            with contextlib.suppress(Exception):
                page.screenshot(path=str(target), full_page=True, timeout=10_000)
                saved.append(str(target))
        if saved:
            error.add_note(f"screenshots: {', '.join(saved)}")
        raise
