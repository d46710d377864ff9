"""A real Prometheus for tests, scraping targets a test runs itself (its series keep their
`track` and `version` labels, as the API's do)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support.postgres import free_port


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextmanager
def prometheus_scraping(
    targets: list[str],
    folder: Path,
    job: str = "test",
    ready_timeout: float = 30.0,
    scrape_interval: int = 1,
) -> Iterator[str]:
    """A Prometheus on 127.0.0.1 scraping `targets` (host:port) every `scrape_interval` seconds.

    Yields its URL once it has scraped them all (`up{job=...} == 1`); always stopped.
    """
    binary = shutil.which("prometheus")
    if binary is None:
        raise RuntimeError("prometheus is not on PATH (apt-get install prometheus)")
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "prometheus.yml"
    listed = ", ".join(f'"{target}"' for target in targets)
    config.write_text(
        f"""global:
  scrape_interval: {scrape_interval}s
  scrape_timeout: {scrape_interval}s
  evaluation_interval: {scrape_interval}s
scrape_configs:
  - job_name: {job}
    honor_labels: true
    static_configs:
      - targets: [{listed}]
"""
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = folder / "prometheus.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + ready_timeout
        with httpx.Client(base_url=url, timeout=2) as client:
            while True:
                if process.poll() is not None:
                    raise RuntimeError(
                        f"prometheus exited with {process.returncode}:\n{_log_tail(log)}"
                    )
                try:
                    answer = client.get(
                        "/api/v1/query", params={"query": f'sum(up{{job="{job}"}})'}
                    )
                    result = answer.json()["data"]["result"] if answer.status_code == 200 else []
                except (httpx.HTTPError, ValueError, KeyError):
                    result = []
                if result and float(result[0]["value"][1]) == len(targets):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"prometheus at {url} did not scrape {targets} within {ready_timeout} s:"
                        f"\n{_log_tail(log)}"
                    )
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
