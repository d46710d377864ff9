"""A PNG of the Prefect UI showing the run graph of a flow's latest run, for the README.

    uv run python -m socialnet_ops.control.screenshot [--flow release] [--out docs/release-run.png]
                                              [--api-url http://127.0.0.1:4200/api]

Without `--api-url` it asks the local control plane (`make up`) for its URLs, as the CLI does.
It finds the newest started run of the flow through the API, opens `<ui>/runs/flow-run/<id>` in
headless Chromium (Debian's binary, driven by Playwright), waits until the run graph's canvas has
drawn and stopped changing, and saves the viewport.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from socialnet_ops.control import control_plane
from socialnet_ops.core.paths import repo_root

DEFAULT_FLOW = "release"
DEFAULT_CHROMIUM = "/usr/bin/chromium"
WIDTH, HEIGHT = 1600, 1000
# The run page of Prefect's classic UI (served at /; the V2 UI lives under /v2) draws the graph
# (@prefecthq/graphs, WebGL) into this canvas.
GRAPH_CANVAS = ".run-graph__stage canvas"
GRAPH = ".run-graph"
# Playwright manages --headless; the rest keeps Chromium offline and lets it run as root.
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


class ScreenshotError(Exception):
    """Why no screenshot could be taken, and what to do about it."""


@dataclass(frozen=True)
class PrefectUrls:
    api: str
    ui: str
    # Prefect's basic auth (`user:password`), when the server asks for it.
    auth: str | None = None

    def http_auth(self) -> tuple[str, str] | None:
        if not self.auth:
            return None
        user, _, password = self.auth.partition(":")
        return user, password

    def flow_run_page(self, run_id: str) -> str:
        return f"{self.ui}/runs/flow-run/{run_id}"


def urls_from_api(api_url: str) -> PrefectUrls:
    """`http://host:port/api` -> the API and the UI served beside it (`http://host:port`)."""
    api = api_url.rstrip("/")
    if not api.startswith(("http://", "https://")) or not api.endswith("/api"):
        raise ScreenshotError(
            f"--api-url {api_url!r}: expected the Prefect API URL, like http://127.0.0.1:4200/api"
        )
    auth = os.environ.get("PREFECT_API_AUTH_STRING") or control_plane.client_auth()
    return PrefectUrls(api=api, ui=api.removesuffix("/api"), auth=auth)


def control_plane_urls(status: Mapping[str, Any], settings: Mapping[str, str]) -> PrefectUrls:
    """The URLs of the local control plane, if it is up (`degraded` still serves the UI)."""
    state = status.get("state", "not started")
    if state not in ("running", "degraded"):
        raise ScreenshotError(
            f"the control plane is not running (state: {state}): start it with `make up` "
            "(or `uv run socialnet-ops up`), or point --api-url at a Prefect server"
        )
    return PrefectUrls(
        api=settings["PREFECT_API_URL"].rstrip("/"),
        ui=settings["PREFECT_UI_URL"].rstrip("/"),
        auth=control_plane.client_auth(),
    )


def local_control_plane_urls() -> PrefectUrls:

    status = control_plane.control_plane_status()
    # Asked only once the state file exists: prefect_settings() records a port when there is none.
    settings = control_plane.prefect_settings() if status.get("state") != "not started" else {}
    return control_plane_urls(status, settings)


def _started_at(run: Mapping[str, Any]) -> datetime | None:
    value = run.get("start_time")
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def newest_started_run(runs: Sequence[Mapping[str, Any]], flow: str, api: str) -> Mapping[str, Any]:
    """The run that started last; scheduled runs that never started have no graph to show."""
    started = [(at, run) for run in runs if (at := _started_at(run)) is not None]
    if not started:
        raise ScreenshotError(
            f"no run of the flow {flow!r} has started on {api}: run one first "
            f"(`make demo` runs `{DEFAULT_FLOW}` on local)"
        )
    return max(started, key=lambda pair: pair[0])[1]


def started_runs_filter(flow: str, limit: int = 10) -> dict[str, Any]:
    """Body of POST /flow_runs/filter: the flow's started runs, newest first."""
    return {
        "flows": {"name": {"any_": [flow]}},
        "flow_runs": {"start_time": {"is_null_": False}},
        "sort": "START_TIME_DESC",
        "limit": limit,
    }


def fetch_runs(urls: PrefectUrls, flow: str, client: httpx.Client | None = None) -> list[Any]:
    own = client is None
    http = client or httpx.Client(timeout=10, auth=urls.http_auth())
    try:
        answer = http.post(f"{urls.api}/flow_runs/filter", json=started_runs_filter(flow))
        answer.raise_for_status()
    except httpx.HTTPStatusError as error:
        raise ScreenshotError(
            f"the Prefect API at {urls.api} refused the run query: "
            f"{error.response.status_code} {error.response.text[:200]}"
        ) from None
    except httpx.HTTPError as error:
        raise ScreenshotError(
            f"no Prefect API answers at {urls.api} ({error}): is the control plane up (`make up`)?"
        ) from None
    finally:
        if own:
            http.close()
    runs = answer.json()
    if not isinstance(runs, list):
        raise ScreenshotError(f"unexpected answer from {urls.api}/flow_runs/filter: {runs!r:.200}")
    return runs


def chromium_executable(
    environ: Mapping[str, str] = os.environ,
    default: str = DEFAULT_CHROMIUM,
    which: Callable[[str], str | None] = shutil.which,
) -> str:
    """$SOCIALNET_CHROMIUM, /usr/bin/chromium, or `chromium` on PATH (Playwright downloads none)."""
    for candidate in (environ.get("SOCIALNET_CHROMIUM"), default, which("chromium")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise ScreenshotError(
        f"Chromium not found at $SOCIALNET_CHROMIUM, {default} or on PATH: install Debian's "
        "package (`apt-get install chromium`; `make install` does) or set SOCIALNET_CHROMIUM"
    )


def capture(
    page_url: str, out: Path, chromium: str, timeout_s: float = 60.0, auth: str | None = None
) -> bool:
    """Save the viewport once the graph has drawn; False when it never stopped changing (a run
    still in progress moves its graph), in which case the last frame is saved anyway."""
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise ScreenshotError(
            "Playwright for Python is missing: `uv sync` installs it (dev group)"
        ) from None

    timeout_ms = timeout_s * 1000
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=chromium,
                headless=True,
                args=list(CHROMIUM_ARGS),
                timeout=timeout_ms,
            )
            try:
                page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
                if auth:
                    # What the UI's login page stores: the credential, base64, in localStorage.
                    token = base64.b64encode(auth.encode()).decode()
                    page.add_init_script(f"localStorage.setItem('prefect-password', '{token}')")
                page.goto(page_url, wait_until="load", timeout=timeout_ms)
                graph = page.locator(GRAPH_CANVAS).first
                try:
                    graph.wait_for(state="visible", timeout=timeout_ms)
                except PlaywrightError:
                    raise ScreenshotError(
                        f"the run graph did not appear at {page_url} within {timeout_s:.0f} s "
                        f"(no {GRAPH_CANVAS!r} on {page.url})"
                    ) from None
                with contextlib.suppress(PlaywrightError):  # a running run's page keeps polling
                    page.wait_for_load_state("networkidle", timeout=timeout_ms / 4)
                settled = _wait_until_still(lambda: page.locator(GRAPH).first.screenshot(), 15.0)
                out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(out))
                return settled
            finally:
                browser.close()
    except PlaywrightError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise ScreenshotError(
            f"Chromium ({chromium}) could not show {page_url}: {first_line}"
        ) from None


def _wait_until_still(frame: Callable[[], bytes], timeout_s: float, every_s: float = 0.5) -> bool:
    """True once two frames in a row are identical (the canvas fades nodes in as it draws)."""
    deadline = time.monotonic() + timeout_s
    previous = frame()
    while time.monotonic() < deadline:
        time.sleep(every_s)
        current = frame()
        if current == previous:
            return True
        previous = current
    return False


def take(flow: str, out: Path, api_url: str | None = None) -> tuple[str, bool]:
    """Screenshot the newest run of `flow`; returns the page URL and whether the graph settled."""
    urls = urls_from_api(api_url) if api_url else local_control_plane_urls()
    run = newest_started_run(fetch_runs(urls, flow), flow, urls.api)
    chromium = chromium_executable()
    page_url = urls.flow_run_page(str(run["id"]))
    return page_url, capture(page_url, out, chromium, auth=urls.auth)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m socialnet_ops.control.screenshot",
        description="Screenshot the Prefect UI's run graph of a flow's latest run.",
    )
    parser.add_argument("--flow", default=DEFAULT_FLOW, help="flow name (default: release)")
    parser.add_argument(
        "--out",
        type=Path,
        default=repo_root() / "docs" / "release-run.png",
        help="PNG to write (default: docs/release-run.png)",
    )
    parser.add_argument(
        "--api-url", help="a Prefect API URL (default: the local control plane's, from `make up`)"
    )
    arguments = parser.parse_args(argv)
    try:
        page_url, settled = take(arguments.flow, arguments.out, arguments.api_url)
    except ScreenshotError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not settled:
        print("note: the graph was still changing (a run in progress?)", file=sys.stderr)
    print(f"{arguments.out}: {page_url}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
