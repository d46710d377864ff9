"""Prometheus tasks: per-track request counts, 5xx answers and latency quantiles for the canary,
and the readings of the policy's custom metrics (`release.analysis.metrics`).

The API labels its own series with `track` and `version` (see `app/api/core/metrics.py`); only
user routes (`/api/...`) count: HAProxy's /readyz health checks, Prometheus' /metrics scrapes and
the smoke test's /version probes would otherwise dilute the sample.

Custom metrics are read here and judged in `core.canary_analysis`: a prometheus metric is its
query rendered for each track, a web metric one GET of its URL and a JSON path into the answer,
the database metric the API's `db_queries_total` and `db_query_duration_seconds`. A provider
that fails gives its metric a one-line `problem` (an inconclusive check), never an exception.
"""

from __future__ import annotations

import math
import re
import urllib.parse
from collections.abc import Callable
from typing import Any

import httpx
from jsonpath_ng.ext import parse as parse_json_path
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from socialnet_ops.core.canary import Measurement, TrackSample
from socialnet_ops.core.canary_analysis import (
    DatabaseFigures,
    MetricReading,
    MetricValue,
    QueryLatency,
)
from socialnet_ops.core.environments import PLACEHOLDER, Analysis, AnalysisMetric
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


def latency_bucket_query(stable_version: str, canary_version: str, window_seconds: float) -> str:
    """PromQL for each track's latency histogram over the window (the Mann-Whitney test)."""
    versions = _label_regex([stable_version, canary_version])
    selector = f'route=~"{USER_ROUTES}", track=~"stable|canary", version=~"{versions}"'
    window = f"{math.ceil(window_seconds)}s"
    return (
        "sum by (le, track, version) "
        f"(increase(http_request_duration_seconds_bucket{{{selector}}}[{window}]))"
    )


def _number(text: str) -> float | None:
    value = float(text)  # Prometheus writes NaN, +Inf, -Inf as such; float() reads them
    return None if math.isnan(value) else value


Series = list[tuple[dict[str, str], float | None]]


def instant_series(client: httpx.Client, query: str) -> Series:
    """Run one instant query; [(labels, value)] (a scalar answer is one series without labels)."""
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
    data = body["data"]
    if data.get("resultType") == "scalar":
        return [({}, _number(data["result"][1]))]
    if data.get("resultType") != "vector":
        raise PrometheusError(f"{query!r} gives a {data.get('resultType')}, not an instant vector")
    return [(series["metric"], _number(series["value"][1])) for series in data["result"]]


def instant_query(client: httpx.Client, query: str) -> dict[tuple[str, str], float | None]:
    """Run one instant query; {(track, version): value}."""
    return {
        (labels.get("track", ""), labels.get("version", "")): value
        for labels, value in instant_series(client, query)
    }


def measure(
    prometheus_url: str,
    stable_version: str,
    canary_version: str,
    interval_seconds: float,
    transport: httpx.BaseTransport | None = None,
    analysis: Analysis | None = None,
    web_transport: httpx.BaseTransport | None = None,
) -> Measurement:
    """Both tracks over the last analysis window; a Prometheus problem becomes `problem`.

    With `analysis`, also each track's latency histogram when its latency test needs them, and
    the readings of its custom metrics (each with its own `problem` when its provider fails).
    """
    window = max(interval_seconds, MIN_WINDOW_SECONDS)
    figures: dict[str, dict[tuple[str, str], float | None]] = {}
    histograms: dict[tuple[str, str], list[tuple[float, float]]] = {}
    readings: tuple[MetricReading, ...] = ()
    versions = {"stable": stable_version, "canary": canary_version}
    try:
        with httpx.Client(
            base_url=prometheus_url, timeout=QUERY_TIMEOUT_SECONDS, transport=transport
        ) as client:
            for name, query in track_queries(stable_version, canary_version, window).items():
                figures[name] = instant_query(client, query)
            if analysis is not None and analysis.latency_test == "mann_whitney":
                query = latency_bucket_query(stable_version, canary_version, window)
                for labels, value in instant_series(client, query):
                    key = (labels.get("track", ""), labels.get("version", ""))
                    histograms.setdefault(key, []).append((float(labels["le"]), value or 0.0))
            if analysis is not None:
                readings = tuple(
                    read_metric(metric, client, versions, window, web_transport)
                    for metric in analysis.metrics
                )
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
            buckets=tuple(sorted(histograms.get(key, []))),
        )

    return Measurement(
        canary=sample("canary", canary_version),
        stable=sample("stable", stable_version),
        window_seconds=window,
        metrics=readings,
    )


# --- custom metrics ------------------------------------------------------------------------------


class MetricError(Exception):
    """A custom metric's provider gave nothing usable; the message says what, in one line."""


def render(template: str, values: dict[str, str], escape: Callable[[str], str]) -> str:
    """The template with its `{track}`, `{version}`, `{window}` replaced (escaped for where
    they go); other braces, PromQL's selectors, stay as written."""
    return PLACEHOLDER.sub(lambda match: escape(values[match.group(1)]), template)


def _promql_string(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _url_part(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _placeholder_values(track: str, version: str, window_seconds: float) -> dict[str, str]:
    return {"track": track, "version": version, "window": f"{math.ceil(window_seconds)}s"}


def read_metric(
    metric: AnalysisMetric,
    prometheus: httpx.Client,
    versions: dict[str, str],
    window_seconds: float,
    web_transport: httpx.BaseTransport | None = None,
) -> MetricReading:
    """What `metric`'s provider reads now; its failure is the reading's `problem`, one line."""
    try:
        if metric.provider == "database":
            return read_database(metric, prometheus, versions, window_seconds)
        tracks = ["canary", "stable"] if metric.has_relative_bound else ["canary"]
        values: dict[str, float | None] = {}
        for track in tracks:
            placeholders = _placeholder_values(track, versions[track], window_seconds)
            if metric.provider == "prometheus":
                assert metric.query is not None  # the policy's model requires it
                query = render(metric.query, placeholders, _promql_string)
                values[track] = prometheus_value(prometheus, query)
            else:
                assert metric.url is not None and metric.json_path is not None
                url = render(metric.url, placeholders, _url_part)
                values[track] = web_value(url, metric.json_path, metric.timeout, web_transport)
        return MetricValue(metric.name, values["canary"], values.get("stable"))
    except (PrometheusError, MetricError) as error:
        problem = " ".join(str(error).split())  # one line for the step table
        if metric.provider == "database":
            return DatabaseFigures(metric.name, 0, 0, problem=problem)
        return MetricValue(metric.name, None, problem=problem)


def prometheus_value(client: httpx.Client, query: str) -> float | None:
    """The single value a metric's query gives (None: no series, no data)."""
    series = instant_series(client, query)
    if len(series) > 1:
        raise MetricError(
            f"{query!r} gives {len(series)} series, not one: aggregate them (sum, max, ...)"
        )
    return series[0][1] if series else None


def web_value(
    url: str, json_path: str, timeout: float, transport: httpx.BaseTransport | None = None
) -> float | None:
    """The number at `json_path` in the JSON `url` answers (None: the path holds null)."""
    try:
        with httpx.Client(timeout=timeout, transport=transport) as client:
            response = client.get(url)
    except (httpx.HTTPError, httpx.InvalidURL) as error:
        raise MetricError(f"{url} unreachable: {error!r}") from None
    if response.status_code != 200:
        raise MetricError(f"{url} answered {response.status_code}: {response.text[:100]}")
    try:
        document = response.json()
    except ValueError:  # not JSON, or not even text
        raise MetricError(f"{url} answered no JSON: {response.text[:100]!r}") from None
    try:
        matches = parse_json_path(json_path).find(document)
    except Exception as error:  # a filter comparing what it cannot (jsonpath-ng raises freely)
        raise MetricError(
            f"{json_path} cannot be applied to the answer of {url}: {error}"
        ) from None
    if not matches:
        raise MetricError(f"{json_path} matches nothing in the answer of {url}")
    value = matches[0].value
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise MetricError(f"{json_path} in the answer of {url} is {value!r}, not a number")
    try:
        return float(value)
    except ValueError:
        raise MetricError(
            f"{json_path} in the answer of {url} is {value!r}, not a number"
        ) from None


def database_queries(
    stable_version: str, canary_version: str, window_seconds: float, quantile: float
) -> dict[str, str]:
    """PromQL over the API's database metrics: the canary's queries by status, and each
    query's latency quantile by (operation, table) on both tracks."""
    window = f"{math.ceil(window_seconds)}s"
    canary = f'track="canary", version="{_promql_string(canary_version)}"'
    versions = _label_regex([stable_version, canary_version])
    both = f'track=~"stable|canary", version=~"{versions}"'
    return {
        "queries": f"sum by (status) (increase(db_queries_total{{{canary}}}[{window}]))",
        "latency": (
            f"histogram_quantile({quantile}, sum by (le, operation, table, track, version) "
            f"(rate(db_query_duration_seconds_bucket{{{both}}}[{window}])))"
        ),
    }


def read_database(
    metric: AnalysisMetric,
    client: httpx.Client,
    versions: dict[str, str],
    window_seconds: float,
) -> DatabaseFigures:
    quantile = 0.95 if metric.latency_quantile == "p95" else 0.99
    queries = database_queries(versions["stable"], versions["canary"], window_seconds, quantile)
    by_status = {
        labels.get("status", ""): value or 0.0
        for labels, value in instant_series(client, queries["queries"])
    }
    latency: dict[tuple[str, str], dict[str, float | None]] = {}
    for labels, value in instant_series(client, queries["latency"]):
        track = labels.get("track", "")
        if versions.get(track) != labels.get("version"):
            continue  # the other track's version (a stale replica): not this comparison
        query = (labels.get("operation", ""), labels.get("table", ""))
        latency.setdefault(query, {})[track] = value
    return DatabaseFigures(
        metric.name,
        queries=sum(by_status.values()),
        errors=by_status.get("error", 0.0),
        latencies=tuple(
            QueryLatency(operation, table, tracks.get("canary"), tracks.get("stable"))
            for (operation, table), tracks in sorted(latency.items())
        ),
    )


@task(name="measure-tracks", cache_policy=NO_CACHE)
def measure_tracks(
    environment: str,
    stable_version: str,
    canary_version: str,
    interval_seconds: float,
    analysis: Analysis | None = None,
) -> Measurement:
    """One analysis measurement of both tracks from the environment's Prometheus, and the
    readings of `analysis`'s custom metrics.

    No retries: an unreachable Prometheus is an inconclusive verdict, and the canary's policy
    decides how long to hold before aborting.
    """
    try:
        prometheus_url = environment_platform(environment).endpoints().prometheus_url
    except Exception as error:  # the platform cannot say where Prometheus is: no data either
        return Measurement.unavailable(
            f"no Prometheus address: {error}", max(interval_seconds, MIN_WINDOW_SECONDS)
        )
    result = measure(
        prometheus_url, stable_version, canary_version, interval_seconds, analysis=analysis
    )
    if result.problem:
        get_run_logger().warning("measurement failed: %s", result.problem)
    for reading in result.metrics:
        if reading.problem:
            get_run_logger().warning("metric %s not read: %s", reading.name, reading.problem)
    return result
