"""Prometheus tasks: per-track request counts, 5xx answers and latency quantiles for the canary.

The API labels its own series with `track` and `version` (see `app/api/core/metrics.py`); only
user routes (`/api/...`) count: HAProxy's /readyz health checks, Prometheus' /metrics scrapes and
the smoke test's /version probes would otherwise dilute the sample.
"""

from __future__ import annotations

import math
import re
from typing import Any

import httpx
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from socialnet_ops.core.canary import Measurement, TrackSample
from tasks.platform import environment_platform

USER_ROUTES = "/api/.+"
# Rates need a few scrapes in their window (the local platform scrapes every 2 s, Kubernetes
# usually every 15 s); a shorter analysis interval still measures over this many seconds.
MIN_WINDOW_SECONDS = 10.0
QUERY_TIMEOUT_SECONDS = 5.0


class PrometheusError(Exception):
    """Prometheus did not answer a query usefully; the message says which and why."""


def _label_regex(values: list[str]) -> str:
    """A PromQL regex matching exactly `values`, escaped for a double-quoted string."""
    pattern = "|".join(re.escape(value) for value in values)
    return pattern.replace("\\", "\\\\").replace('"', '\\"')


def track_queries(
    stable_version: str, canary_version: str, window_seconds: float
) -> dict[str, str]:
    """PromQL for each figure, grouped by (track, version)."""
    versions = _label_regex([stable_version, canary_version])
    selector = f'route=~"{USER_ROUTES}", track=~"stable|canary", version=~"{versions}"'
    window = f"{math.ceil(window_seconds)}s"
    buckets = f"sum by (le, track, version) (rate(http_request_duration_seconds_bucket{{{selector}}}[{window}]))"
    return {
        "requests": f"sum by (track, version) (increase(http_requests_total{{{selector}}}[{window}]))",
        "errors": (
            "sum by (track, version) "
            f'(increase(http_requests_total{{{selector}, status=~"5.."}}[{window}]))'
        ),
        "p95": f"histogram_quantile(0.95, {buckets})",
        "p99": f"histogram_quantile(0.99, {buckets})",
    }


def _number(text: str) -> float | None:
    value = float(text)  # Prometheus writes NaN, +Inf, -Inf as such; float() reads them
    return None if math.isnan(value) else value


def instant_query(client: httpx.Client, query: str) -> dict[tuple[str, str], float | None]:
    """Run one instant query; {(track, version): value}."""
    try:
        response = client.get("/api/v1/query", params={"query": query})
    except httpx.HTTPError as error:
        raise PrometheusError(f"Prometheus at {client.base_url} unreachable: {error!r}") from None
    if response.status_code != 200:
        raise PrometheusError(
            f"Prometheus at {client.base_url} answered {response.status_code}: "
            f"{response.text[:200]}"
        )
    body: dict[str, Any] = response.json()
    if body.get("status") != "success":
        raise PrometheusError(f"Prometheus refused {query!r}: {body.get('error')}")
    values: dict[tuple[str, str], float | None] = {}
    for series in body["data"]["result"]:
        labels = series["metric"]
        values[(labels.get("track", ""), labels.get("version", ""))] = _number(series["value"][1])
    return values


def measure(
    prometheus_url: str,
    stable_version: str,
    canary_version: str,
    interval_seconds: float,
    transport: httpx.BaseTransport | None = None,
) -> Measurement:
    """Both tracks over the last analysis window; a Prometheus problem becomes `problem`."""
    window = max(interval_seconds, MIN_WINDOW_SECONDS)
    figures: dict[str, dict[tuple[str, str], float | None]] = {}
    try:
        with httpx.Client(
            base_url=prometheus_url, timeout=QUERY_TIMEOUT_SECONDS, transport=transport
        ) as client:
            for name, query in track_queries(stable_version, canary_version, window).items():
                figures[name] = instant_query(client, query)
    except PrometheusError as error:
        return Measurement.unavailable(str(error), window)

    def sample(track: str, version: str) -> TrackSample | None:
        key = (track, version)
        requests = figures["requests"].get(key)
        if requests is None:
            return None
        return TrackSample(
            requests=requests,
            errors=figures["errors"].get(key) or 0.0,
            p95=figures["p95"].get(key),
            p99=figures["p99"].get(key),
        )

    return Measurement(
        canary=sample("canary", canary_version),
        stable=sample("stable", stable_version),
        window_seconds=window,
    )


@task(name="measure-tracks", cache_policy=NO_CACHE)
def measure_tracks(
    environment: str, stable_version: str, canary_version: str, interval_seconds: float
) -> Measurement:
    """One analysis measurement of both tracks from the environment's Prometheus.

    No retries: an unreachable Prometheus is an inconclusive verdict, and the canary's policy
    decides how long to hold before aborting.
    """
    try:
        prometheus_url = environment_platform(environment).endpoints().prometheus_url
    except Exception as error:  # the platform cannot say where Prometheus is: no data either
        return Measurement.unavailable(
            f"no Prometheus address: {error}", max(interval_seconds, MIN_WINDOW_SECONDS)
        )
    result = measure(prometheus_url, stable_version, canary_version, interval_seconds)
    if result.problem:
        get_run_logger().warning("measurement failed: %s", result.problem)
    return result
