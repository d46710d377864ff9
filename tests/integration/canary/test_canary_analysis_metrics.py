"""Custom analysis metrics against a real Prometheus and a real web endpoint (issue #22).

A small HTTP server of the test stands for the API of both tracks: its /metrics exposes growing
counters and histograms labelled with `track` and `version` (the canary fails checkout 4x as
often as stable, and one of its database queries is slower), and /status/<track>/<version>
answers JSON for the web metric. A real Prometheus scrapes it every second; `measure` reads the
policy's metrics from both and `judge` judges them.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from socialnet_ops.core.canary import judge
from socialnet_ops.core.canary_analysis import DatabaseFigures, MetricValue
from socialnet_ops.core.environments import Analysis
from tasks.metrics import measure
from tests.support.prometheus import prometheus_scraping

pytestmark = pytest.mark.integration

STABLE, CANARY = "v1", "v2"
BOUNDS = ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "+Inf")
# Per second, per track: (requests, the bucket index every request falls in)
HTTP = {"stable": (40.0, 2), "canary": (20.0, 6)}  # canary: 250-500 ms, stable 10-25 ms
CHECKOUT_FAILURES = {"stable": 1.0, "canary": 4.0}
# (operation, table): per track, (queries per second, bucket index)
QUERIES = {
    ("select", "users"): {"stable": (30.0, 2), "canary": (15.0, 2)},
    ("select", "posts"): {"stable": (30.0, 1), "canary": (15.0, 5)},  # 5-10 ms vs 100-250 ms
}
QUEUE_DEPTH = {"stable": 2, "canary": 7}


def _histogram(name: str, labels: str, count: float, bucket: int) -> list[str]:
    return [
        f'{name}_bucket{{{labels},le="{le}"}} {count if index >= bucket else 0.0}'
        for index, le in enumerate(BOUNDS)
    ] + [f"{name}_count{{{labels}}} {count}"]


def exposition(elapsed: float) -> str:
    """The API's series of both tracks, `elapsed` seconds after they started counting."""
    lines: list[str] = []
    for track, version in (("stable", STABLE), ("canary", CANARY)):
        labels = f'track="{track}",version="{version}"'
        requests, bucket = HTTP[track]
        route = f'route="/api/posts",method="GET",{labels}'
        lines.append(f'http_requests_total{{{route},status="200"}} {requests * elapsed}')
        lines += _histogram("http_request_duration_seconds", route, requests * elapsed, bucket)
        lines.append(f"checkout_failures_total{{{labels}}} {CHECKOUT_FAILURES[track] * elapsed}")
        for (operation, table), tracks in QUERIES.items():
            rate, bucket = tracks[track]
            query = f'operation="{operation}",table="{table}",{labels}'
            lines.append(f'db_queries_total{{{query},status="ok"}} {rate * elapsed * 0.99}')
            lines.append(f'db_queries_total{{{query},status="error"}} {rate * elapsed * 0.01}')
            lines += _histogram("db_query_duration_seconds", query, rate * elapsed, bucket)
    return "\n".join(lines) + "\n"


@pytest.fixture
def app_of_both_tracks() -> Iterator[str]:
    started = time.monotonic()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                body, kind = exposition(time.monotonic() - started), "text/plain; version=0.0.4"
            elif self.path.startswith("/status/"):
                track = self.path.split("/")[2]
                body, kind = (
                    json.dumps({"queue": {"depth": QUEUE_DEPTH[track]}}),
                    "application/json",
                )
            else:
                self.send_error(404)
                return
            payload = body.encode()
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def policy(app: str) -> Analysis:
    checkout = (
        'sum(increase(checkout_failures_total{track="{track}", version="{version}"}[{window}]))'
    )
    return Analysis.model_validate(
        {
            "interval": "10s",
            "min_requests": 50,
            "latency_test": "mann_whitney",
            "metrics": [
                {
                    "name": "checkout-absolute",
                    "provider": "prometheus",
                    "query": checkout,
                    "max": 100,
                },
                {
                    "name": "checkout-relative",
                    "provider": "prometheus",
                    "query": checkout,
                    "max_ratio": 2,
                    "floor": 1,
                },
                {"name": "database", "provider": "database", "max_error_ratio": 0.05},
                {
                    "name": "queue-depth",
                    "provider": "web",
                    "url": f"http://{app}/status/{{track}}/{{version}}",
                    "json_path": "$.queue.depth",
                    "max": 10,
                },
                {
                    "name": "queue-growth",
                    "provider": "web",
                    "url": f"http://{app}/status/{{track}}/{{version}}",
                    "json_path": "$.queue.depth",
                    "max_ratio": 2,
                },
                {
                    "name": "missing",
                    "provider": "web",
                    "url": f"http://{app}/nowhere/{{version}}",
                    "json_path": "$.queue.depth",
                    "max": 10,
                },
            ],
        }
    )


def test_custom_metrics_from_a_real_prometheus_and_web_endpoint(
    app_of_both_tracks: str, tmp_path: Path
) -> None:
    with prometheus_scraping([app_of_both_tracks], tmp_path / "prometheus") as url:
        analysis = policy(app_of_both_tracks)
        # A full 10 s window of scrapes: increase() then extrapolates to the window's length.
        deadline = time.monotonic() + 25
        while True:
            answer = httpx.get(
                f"{url}/api/v1/query",
                params={"query": "count_over_time(checkout_failures_total[10s])"},
            ).json()
            samples = [float(series["value"][1]) for series in answer["data"]["result"]]
            if len(samples) == 2 and min(samples) >= 10:
                break
            assert time.monotonic() < deadline, f"too few scrapes: {answer}"
            time.sleep(0.5)
        measurement = measure(url, STABLE, CANARY, 10, analysis=analysis)

    assert measurement.problem is None
    readings = {reading.name: reading for reading in measurement.metrics}
    absolute = readings["checkout-absolute"]
    assert isinstance(absolute, MetricValue) and absolute.stable is None
    assert absolute.canary == pytest.approx(40, rel=0.3)  # 4/s over 10 s
    relative = readings["checkout-relative"]
    assert isinstance(relative, MetricValue)
    assert relative.canary is not None and relative.stable is not None
    assert relative.canary / relative.stable == pytest.approx(4, rel=0.1)
    assert readings["queue-depth"] == MetricValue("queue-depth", 7)
    assert readings["queue-growth"] == MetricValue("queue-growth", 7, 2)
    database = readings["database"]
    assert isinstance(database, DatabaseFigures) and database.problem is None
    assert database.errors / database.queries == pytest.approx(0.01, rel=0.05)
    assert {(query.operation, query.table) for query in database.latencies} == {
        ("select", "users"),
        ("select", "posts"),
    }

    verdict = judge(measurement, analysis)
    outcomes = {check.name: check.outcome for check in verdict.checks}
    assert outcomes == {
        "errors": "pass",
        "latency": "fail",  # the canary's requests are all slower: Mann-Whitney
        "checkout-absolute": "pass",
        "checkout-relative": "fail",
        "database": "fail",
        "queue-depth": "pass",
        "queue-growth": "fail",
        "missing": "inconclusive",
    }
    assert verdict.outcome == "fail"
    assert "database: slowest query select posts p95" in verdict.why
    assert "above the policy's max_ratio 2x" in verdict.why
    missing = next(check for check in verdict.checks if check.name == "missing")
    assert missing.reasons[0].startswith("missing: http://")
    assert "answered 404" in missing.reasons[0]
