"""Per-track figures from Prometheus' HTTP API: the queries, and how answers become samples."""

from __future__ import annotations

import json

import httpx
import pytest

from socialnet_ops.core.canary import TrackSample
from tasks.metrics import MIN_WINDOW_SECONDS, measure, track_queries

pytestmark = pytest.mark.unit


def test_queries_count_user_routes_of_both_versions_by_track() -> None:
    queries = track_queries("1.2.0", "1.3.0-rc.1", 30)
    selector = 'route=~"/api/.+", track=~"stable|canary", version=~"1\\\\.2\\\\.0|1\\\\.3\\\\.0\\\\-rc\\\\.1"'
    assert queries["requests"] == (
        f"sum by (track, version) (increase(http_requests_total{{{selector}}}[30s]))"
    )
    assert queries["errors"].endswith(f'{{{selector}, status=~"5.."}}[30s]))')
    assert queries["p99"] == (
        "histogram_quantile(0.99, sum by (le, track, version) "
        f"(rate(http_request_duration_seconds_bucket{{{selector}}}[30s])))"
    )


def vector(*series: tuple[str, str, str]) -> dict[str, object]:
    return {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [
                {"metric": {"track": track, "version": version}, "value": [1700000000.0, value]}
                for track, version, value in series
            ],
        },
    }


def fake_prometheus(answers: dict[str, dict[str, object]]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        query = request.url.params["query"]
        name = next(
            name
            for name in ("errors", "requests", "p95", "p99")
            if str(answers[name]["_match"]) in query
        )
        body = {key: value for key, value in answers[name].items() if key != "_match"}
        return httpx.Response(200, text=json.dumps(body))

    return httpx.MockTransport(handle)


def answers(
    requests: dict[str, object],
    errors: dict[str, object],
    p95: dict[str, object],
    p99: dict[str, object],
) -> dict[str, dict[str, object]]:
    return {
        "requests": {"_match": "increase(http_requests_total{route", **requests},
        "errors": {"_match": 'status=~"5.."', **errors},
        "p95": {"_match": "histogram_quantile(0.95", **p95},
        "p99": {"_match": "histogram_quantile(0.99", **p99},
    }


def test_answers_become_one_sample_per_track() -> None:
    transport = fake_prometheus(
        answers(
            vector(("stable", "v1", "240"), ("canary", "v2", "60.5")),
            vector(("canary", "v2", "18")),  # stable answered no 5xx: no series at all
            vector(("stable", "v1", "0.02"), ("canary", "v2", "NaN")),
            vector(("stable", "v1", "0.04"), ("canary", "v2", "+Inf")),
        )
    )
    measurement = measure("http://prometheus", "v1", "v2", 5, transport=transport)
    assert measurement.problem is None
    assert measurement.window_seconds == MIN_WINDOW_SECONDS  # 5 s is too few scrapes
    assert measurement.stable == TrackSample(requests=240, errors=0, p95=0.02, p99=0.04)
    assert measurement.canary == TrackSample(requests=60.5, errors=18, p95=None, p99=float("inf"))


def test_no_series_for_the_canary_is_no_sample() -> None:
    empty = vector()
    transport = fake_prometheus(
        answers(vector(("stable", "v1", "100")), empty, vector(("stable", "v1", "0.02")), empty)
    )
    measurement = measure("http://prometheus", "v1", "v2", 30, transport=transport)
    assert measurement.canary is None
    assert measurement.stable is not None and measurement.stable.requests == 100
    assert measurement.window_seconds == 30


def test_an_unreachable_prometheus_is_a_problem_not_an_exception() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    measurement = measure(
        "http://prometheus", "v1", "v2", 30, transport=httpx.MockTransport(refuse)
    )
    assert measurement.canary is None and measurement.stable is None
    assert measurement.problem is not None
    assert "unreachable" in measurement.problem and "connection refused" in measurement.problem


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (503, "service unavailable", "answered 503"),
        (200, json.dumps({"status": "error", "error": "parse error"}), "refused"),
    ],
)
def test_a_prometheus_error_is_a_problem(status: int, body: str, message: str) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(status, text=body))
    measurement = measure("http://prometheus", "v1", "v2", 30, transport=transport)
    assert measurement.problem is not None and message in measurement.problem
