"""Custom analysis metrics, the weighted score and the Mann-Whitney latency test (issue #22)."""

from __future__ import annotations

import copy
import json
from typing import Any

import httpx
import pytest
import yaml

from socialnet_ops.core.canary import Measurement, TrackSample, judge
from socialnet_ops.core.canary_analysis import (
    DatabaseFigures,
    MetricValue,
    QueryLatency,
    bucket_counts,
    latency_distribution_check,
    mann_whitney,
)
from socialnet_ops.core.environments import (
    Analysis,
    EnvironmentError,
    parse_environment,
)
from socialnet_ops.core.paths import environments_dir, repo_root
from tasks.metrics import measure, read_metric, web_value

pytestmark = pytest.mark.unit

PRODUCTION = yaml.safe_load((environments_dir() / "production.yaml").read_text())


def analysis_of(document: dict[str, Any]) -> Analysis:
    environment = copy.deepcopy(PRODUCTION)
    environment.setdefault("release", {})["analysis"] = document
    return parse_environment(environment, "production.yaml").release.analysis


def policy_error(document: dict[str, Any]) -> str:
    with pytest.raises(EnvironmentError) as raised:
        analysis_of(document)
    return str(raised.value)


def healthy(requests: float = 400, p95: float = 0.150) -> TrackSample:
    return TrackSample(requests=requests, errors=0, p95=p95, p99=0.250)


def measured(
    *readings: MetricValue | DatabaseFigures, canary: TrackSample | None = None
) -> Measurement:
    return Measurement(
        canary=canary or healthy(), stable=healthy(), window_seconds=30, metrics=readings
    )


def prometheus_metric(**bounds: Any) -> dict[str, Any]:
    return {
        "name": "checkout-failures",
        "provider": "prometheus",
        "query": 'sum(rate(checkout_failures_total{track="{track}", version="{version}"}[{window}]))',
        **bounds,
    }


# --- the policy ----------------------------------------------------------------------------------


def readme_example() -> dict[str, Any]:
    """The YAML example of the README's "Analysis metrics" section."""
    text = (repo_root() / "README.md").read_text()
    block = next(
        block.split("\n", 1)[1]
        for block in text.split("```yaml")[1:]
        if "provider: database" in block.split("```")[0]
    ).split("```")[0]
    return dict(yaml.safe_load(block)["release"]["analysis"])


def test_the_documented_example_is_a_valid_policy() -> None:
    analysis = analysis_of(readme_example())
    assert [metric.provider for metric in analysis.metrics] == ["prometheus", "web", "database"]
    assert analysis.metrics[1].timeout == 3
    assert analysis.score is not None and analysis.score.pass_ == 90
    assert analysis.builtin_weights.errors == 3
    assert analysis.latency_test == "mann_whitney"


def test_without_new_keys_the_policy_is_todays() -> None:
    analysis = analysis_of({})
    assert analysis.metrics == [] and analysis.score is None
    assert analysis.latency_test == "quantile"


@pytest.mark.parametrize(
    ("metric", "expected"),
    [
        (
            prometheus_metric(),
            "release.analysis.metrics[0]: a metric needs a bound: min or max",
        ),
        (
            {**prometheus_metric(max=1), "query": 'sum(x{track="{trak}"})'},
            "release.analysis.metrics[0].query: 'sum(x{track=\"{trak}\"})': unknown placeholder "
            "{trak}; known: {track}, {version}, {window}",
        ),
        (
            {
                "name": "depth",
                "provider": "web",
                "url": "http://queues/depth",
                "json_path": "$.depth",
                "max_ratio": 1.2,
            },
            "release.analysis.metrics[0]: url: a relative bound (min_ratio/max_ratio) needs "
            "{track} or {version} in it",
        ),
        (
            {"name": "depth", "provider": "web", "url": "http://q/", "json_path": "$.[[", "max": 1},
            "release.analysis.metrics[0].json_path: '$.[[': not a JSON path",
        ),
        (
            {"name": "depth", "provider": "web", "url": "http://q/", "max": 1},
            "release.analysis.metrics[0]: json_path: a web metric needs one",
        ),
        (
            {"name": "db", "provider": "database", "query": "up"},
            "release.analysis.metrics[0]: query: not a field of a database metric",
        ),
        (
            prometheus_metric(max=1, floor=0.5),
            "release.analysis.metrics[0]: floor: only for a relative bound",
        ),
        (
            {**prometheus_metric(max=1), "name": "latency"},
            "release.analysis: metrics[0].name: 'latency' is a built-in check's name",
        ),
    ],
)
def test_a_bad_metric_is_one_line_naming_the_field(metric: dict[str, Any], expected: str) -> None:
    message = policy_error({"metrics": [metric]})
    assert "\n" not in message
    assert message.startswith("production.yaml: ")
    assert expected in message


def test_score_thresholds_are_checked() -> None:
    message = policy_error({"score": {"pass": 70, "marginal": 80}})
    assert message == "production.yaml: release.analysis.score: marginal: 80 is above pass 70"


# --- bounds --------------------------------------------------------------------------------------


def test_absolute_max_fails_above_and_passes_below() -> None:
    analysis = analysis_of({"metrics": [prometheus_metric(max=0.5)]})
    failed = judge(measured(MetricValue("checkout-failures", 0.8)), analysis)
    assert failed.outcome == "fail"
    assert failed.why == "checkout-failures 0.8 is above the policy's max 0.5"
    passed = judge(measured(MetricValue("checkout-failures", 0.2)), analysis)
    assert passed.outcome == "pass", passed.why
    assert "checkout-failures 0.2 (max 0.5)" in passed.why


def test_absolute_min_fails_below() -> None:
    analysis = analysis_of({"metrics": [prometheus_metric(min=100)]})
    verdict = judge(measured(MetricValue("checkout-failures", 40)), analysis)
    assert verdict.outcome == "fail"
    assert "checkout-failures 40 is below the policy's min 100" in verdict.why


def test_relative_max_ratio_compares_with_stable() -> None:
    analysis = analysis_of({"metrics": [prometheus_metric(max_ratio=1.5)]})
    worse = judge(measured(MetricValue("checkout-failures", 3.0, stable=1.0)), analysis)
    assert worse.outcome == "fail"
    assert "checkout-failures 3 vs stable 1: 3.00x, above the policy's max_ratio 1.5x" in worse.why
    alike = judge(measured(MetricValue("checkout-failures", 1.2, stable=1.0)), analysis)
    assert alike.outcome == "pass", alike.why


def test_relative_min_ratio_fails_a_canary_doing_much_less() -> None:
    analysis = analysis_of({"metrics": [prometheus_metric(min_ratio=0.8)]})
    verdict = judge(measured(MetricValue("checkout-failures", 50, stable=100)), analysis)
    assert verdict.outcome == "fail"
    assert "0.50x, below the policy's min_ratio 0.8x" in verdict.why


def test_a_stable_zero_is_raised_to_the_floor() -> None:
    analysis = analysis_of({"metrics": [prometheus_metric(max_ratio=2, floor=0.1)]})
    small = judge(measured(MetricValue("checkout-failures", 0.15, stable=0.0)), analysis)
    assert small.outcome == "pass", small.why
    assert "vs stable 0 (floored to 0.1): 1.50x" in small.why
    large = judge(measured(MetricValue("checkout-failures", 0.5, stable=None)), analysis)
    assert large.outcome == "fail"
    assert "vs stable none (floored to 0.1): 5.00x" in large.why


def test_a_stable_zero_without_floor_is_inconclusive() -> None:
    analysis = analysis_of({"metrics": [prometheus_metric(max_ratio=2)]})
    verdict = judge(measured(MetricValue("checkout-failures", 0.5, stable=0.0)), analysis)
    assert verdict.outcome == "inconclusive"
    assert "stable's value is 0, nothing to compare" in verdict.why
    assert "(set floor)" in verdict.why


def test_no_data_and_provider_errors_are_inconclusive_naming_the_metric() -> None:
    analysis = analysis_of({"metrics": [prometheus_metric(max=1)]})
    empty = judge(measured(MetricValue("checkout-failures", None)), analysis)
    assert empty.outcome == "inconclusive"
    assert "checkout-failures: no value for the canary in the last 30 s" in empty.why
    broken = judge(
        measured(MetricValue("checkout-failures", None, problem="Prometheus answered 503")),
        analysis,
    )
    assert broken.outcome == "inconclusive"
    assert broken.reasons[0] == "checkout-failures: Prometheus answered 503"


def test_a_failed_builtin_still_fails_when_a_metric_has_no_data() -> None:
    analysis = analysis_of({"metrics": [prometheus_metric(max=1)]})
    slow = healthy(p95=0.900)
    verdict = judge(measured(MetricValue("checkout-failures", None), canary=slow), analysis)
    assert verdict.outcome == "fail"
    assert "above the policy's 1.5x" in verdict.why


# --- the database provider ----------------------------------------------------------------------


DATABASE = {"name": "database", "provider": "database", "max_error_ratio": 0.01}


def test_one_slower_query_fails_the_canary_and_is_named() -> None:
    analysis = analysis_of({"metrics": [DATABASE]})
    figures = DatabaseFigures(
        "database",
        queries=1000,
        errors=0,
        latencies=(
            QueryLatency("select", "users", canary=0.020, stable=0.018),
            QueryLatency("select", "posts", canary=0.240, stable=0.030),
            QueryLatency("insert", "posts", canary=0.012, stable=None),
        ),
    )
    verdict = judge(measured(figures), analysis)
    assert verdict.outcome == "fail"
    assert (
        "database: slowest query select posts p95 240 ms vs stable 30 ms: 8.00x, above the "
        "policy's 1.5x" in verdict.why
    )


def test_query_latencies_below_the_floor_pass() -> None:
    analysis = analysis_of({"metrics": [DATABASE]})
    figures = DatabaseFigures(
        "database",
        queries=1000,
        errors=2,
        latencies=(QueryLatency("select", "users", canary=0.008, stable=0.002),),
    )
    verdict = judge(measured(figures), analysis)
    assert verdict.outcome == "pass", verdict.why
    assert "vs stable 2 ms (floored to 10 ms): 0.80x" in verdict.why


def test_database_errors_fail_on_the_ratio() -> None:
    analysis = analysis_of({"metrics": [DATABASE]})
    figures = DatabaseFigures("database", queries=500, errors=25)
    verdict = judge(measured(figures), analysis)
    assert verdict.outcome == "fail"
    assert "database: query error ratio 5.00% (25/500), above the policy's 1%" in verdict.why


def test_no_database_query_is_inconclusive() -> None:
    analysis = analysis_of({"metrics": [DATABASE]})
    verdict = judge(measured(DatabaseFigures("database", queries=0, errors=0)), analysis)
    assert verdict.outcome == "inconclusive"
    assert "database: no database query from the canary" in verdict.why


# --- the weighted score --------------------------------------------------------------------------


def scored(weight: float, marginal: float = 75, pass_: float = 90) -> Analysis:
    return analysis_of(
        {
            "metrics": [prometheus_metric(max=0.5, weight=weight)],
            "score": {"pass": pass_, "marginal": marginal},
        }
    )


FAILING_METRIC = MetricValue("checkout-failures", 0.8)


def test_without_score_any_failed_check_fails() -> None:
    verdict = judge(
        measured(FAILING_METRIC),
        analysis_of({"metrics": [prometheus_metric(max=0.5, weight=0.01)]}),
    )
    assert verdict.outcome == "fail" and verdict.score is None


def test_a_light_failed_check_leaves_a_passing_score() -> None:
    verdict = judge(measured(FAILING_METRIC), scored(weight=0.1))  # 2 / 2.1 = 95
    assert verdict.outcome == "pass", verdict.why
    assert verdict.score == pytest.approx(95.2, abs=0.1)
    assert verdict.reasons[0] == "score 95 (pass >= 90, marginal >= 75): pass"
    assert any(
        reason.startswith("checkout-failures fail (weight 0.1): ") for reason in verdict.reasons
    )
    assert any(reason.startswith("errors pass (weight 1): ") for reason in verdict.reasons)


def test_a_score_between_marginal_and_pass_is_inconclusive() -> None:
    verdict = judge(measured(FAILING_METRIC), scored(weight=0.5))  # 2 / 2.5 = 80
    assert verdict.outcome == "inconclusive"
    assert verdict.reasons[0] == "score 80 (pass >= 90, marginal >= 75): marginal, inconclusive"


def test_a_score_below_marginal_fails() -> None:
    verdict = judge(measured(FAILING_METRIC), scored(weight=2))  # 2 / 4 = 50
    assert verdict.outcome == "fail"
    assert verdict.reasons[0] == "score 50 (pass >= 90, marginal >= 75): fail"


def test_builtin_weights_count_in_the_score() -> None:
    analysis = analysis_of(
        {
            "metrics": [prometheus_metric(max=0.5)],
            "score": {"pass": 90, "marginal": 75},
            "builtin_weights": {"errors": 10, "latency": 10},
        }
    )
    verdict = judge(measured(FAILING_METRIC), analysis)  # 20 / 21
    assert verdict.outcome == "pass"


def test_a_check_without_data_keeps_a_passing_score_from_passing() -> None:
    verdict = judge(measured(MetricValue("checkout-failures", None)), scored(weight=1))
    assert verdict.outcome == "inconclusive"
    assert "1 check(s) without data: inconclusive" in verdict.reasons[0]


# --- the latency distribution test ---------------------------------------------------------------

BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, float("inf"))


def histogram(*counts: float) -> tuple[tuple[float, float], ...]:
    """Cumulative buckets, as Prometheus gives them, from per-bucket counts."""
    total, cumulative = 0.0, []
    for le, count in zip(BOUNDS, counts, strict=False):
        total += count
        cumulative.append((le, total))
    for le in BOUNDS[len(counts) :]:
        cumulative.append((le, total))
    return tuple(cumulative)


def test_bucket_counts_align_bounds_and_round_extrapolated_counts() -> None:
    canary = ((0.1, 10.4), (0.5, 30.2), (float("inf"), 30.1))
    stable = ((0.1, 5.0), (0.25, 8.0), (float("inf"), 9.0))
    assert bucket_counts(canary, stable) == ([10, 0, 20, 0], [5, 3, 0, 1])


def test_a_shifted_distribution_fails() -> None:
    stable = histogram(0, 50, 300, 100, 30, 10, 10)
    canary = histogram(0, 5, 30, 60, 40, 30, 30, 5)
    check = latency_distribution_check(canary, stable, 0.05, 0.6, "30 s")
    assert check.outcome == "fail"
    assert "significantly slower (p < 0.05) and materially so" in check.reasons[0]


def test_the_same_distribution_passes() -> None:
    stable = histogram(0, 50, 300, 100, 30, 10, 10)
    canary = histogram(0, 10, 60, 20, 6, 2, 2)
    test = mann_whitney(*bucket_counts(canary, stable))
    assert test.slower_probability == pytest.approx(0.5, abs=0.01)
    assert test.p_value > 0.3
    assert latency_distribution_check(canary, stable, 0.05, 0.6, "30 s").outcome == "pass"


def test_a_small_shift_at_huge_counts_is_significant_but_not_material() -> None:
    stable = histogram(0, 100_000, 600_000, 200_000, 60_000, 20_000, 20_000)
    canary = histogram(0, 90_000, 590_000, 220_000, 65_000, 22_000, 23_000)
    test = mann_whitney(*bucket_counts(canary, stable))
    assert test.p_value < 1e-6
    assert test.slower_probability < 0.55
    check = latency_distribution_check(canary, stable, 0.05, 0.6, "30 s")
    assert check.outcome == "pass"
    assert "significant (p < 0.05) but below the policy's 0.6, not material" in check.reasons[0]


def test_judge_uses_the_distribution_test_when_asked() -> None:
    analysis = analysis_of({"latency_test": "mann_whitney"})
    stable = TrackSample(400, 0, p95=0.1, buckets=histogram(0, 50, 300, 100, 30, 10, 10))
    canary = TrackSample(200, 0, p95=0.3, buckets=histogram(0, 5, 30, 60, 40, 30, 30, 5))
    verdict = judge(Measurement(canary, stable, 30), analysis)
    assert verdict.outcome == "fail"
    assert "Mann-Whitney" in verdict.why and verdict.latency_ratio is None
    no_histogram = judge(Measurement(TrackSample(200, 0, p95=0.3), stable, 30), analysis)
    assert no_histogram.outcome == "inconclusive"
    assert "no latency histogram for the canary" in no_histogram.why


# --- the providers -------------------------------------------------------------------------------


def web_service(answers: dict[str, httpx.Response]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        return answers[str(request.url)]

    return httpx.MockTransport(handle)


def test_web_value_follows_the_json_path() -> None:
    body = {"queues": [{"name": "push", "depth": 3}, {"name": "mail", "depth": 42}]}
    transport = web_service({"http://q/depth": httpx.Response(200, json=body)})
    assert web_value("http://q/depth", '$.queues[?(@.name == "mail")].depth', 2, transport) == 42


@pytest.mark.parametrize(
    ("answer", "path", "problem"),
    [
        (httpx.Response(500, text="boom"), "$.depth", "answered 500: boom"),
        (httpx.Response(200, text="<html>"), "$.depth", "answered no JSON"),
        (httpx.Response(200, json={"size": 1}), "$.depth", "$.depth matches nothing"),
        (httpx.Response(200, json={"depth": "deep"}), "$.depth", "is 'deep', not a number"),
    ],
)
def test_a_failing_web_metric_is_an_inconclusive_problem(
    answer: httpx.Response, path: str, problem: str
) -> None:
    analysis = analysis_of(
        {
            "metrics": [
                {
                    "name": "queue-depth",
                    "provider": "web",
                    "url": "http://q/{version}",
                    "json_path": path,
                    "max": 10,
                }
            ]
        }
    )
    transport = web_service({"http://q/v2": answer})
    with httpx.Client(base_url="http://prometheus") as prometheus:
        reading = read_metric(
            analysis.metrics[0], prometheus, {"canary": "v2", "stable": "v1"}, 30, transport
        )
    assert reading.problem is not None and problem in reading.problem
    verdict = judge(measured(reading), analysis)
    assert verdict.outcome == "inconclusive"
    assert verdict.reasons[0].startswith("queue-depth: ")
    assert "http://q/v2" in verdict.reasons[0]


def test_web_relative_reads_both_tracks() -> None:
    analysis = analysis_of(
        {
            "metrics": [
                {
                    "name": "queue-depth",
                    "provider": "web",
                    "url": "http://q/{track}/{version}",
                    "json_path": "$.depth",
                    "max_ratio": 2,
                }
            ]
        }
    )
    transport = web_service(
        {
            "http://q/canary/v2": httpx.Response(200, json={"depth": 30}),
            "http://q/stable/v1": httpx.Response(200, json={"depth": 10}),
        }
    )
    with httpx.Client(base_url="http://prometheus") as prometheus:
        reading = read_metric(
            analysis.metrics[0], prometheus, {"canary": "v2", "stable": "v1"}, 30, transport
        )
    assert reading == MetricValue("queue-depth", 30, 10)
    assert judge(measured(reading), analysis).outcome == "fail"


def vector(*series: tuple[dict[str, str], str]) -> httpx.Response:
    result = [{"metric": labels, "value": [1700000000.0, value]} for labels, value in series]
    return httpx.Response(
        200,
        text=json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}),
    )


def test_measure_renders_each_metric_for_each_track_and_reads_the_histograms() -> None:
    asked: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        query = request.url.params["query"]
        asked.append(query)
        if query.startswith("sum(rate(checkout_failures_total"):
            value = "4" if 'track="canary", version="v2"' in query else "1"
            return vector(({}, value))
        if "increase(http_request_duration_seconds_bucket" in query:
            return vector(
                ({"le": "0.1", "track": "canary", "version": "v2"}, "40"),
                ({"le": "+Inf", "track": "canary", "version": "v2"}, "60"),
            )
        if "db_queries_total" in query:
            return vector(({"status": "ok"}, "98"), ({"status": "error"}, "2"))
        if "db_query_duration_seconds_bucket" in query:
            return vector(
                (
                    {"operation": "select", "table": "posts", "track": "canary", "version": "v2"},
                    "0.2",
                ),
                (
                    {"operation": "select", "table": "posts", "track": "stable", "version": "v1"},
                    "0.1",
                ),
                (
                    {"operation": "select", "table": "posts", "track": "stable", "version": "v0"},
                    "9",
                ),
            )
        return vector(({"track": "canary", "version": "v2"}, "100"))

    analysis = analysis_of(
        {"metrics": [prometheus_metric(max_ratio=2), DATABASE], "latency_test": "mann_whitney"}
    )
    result = measure("http://prometheus", "v1", "v2", 30, httpx.MockTransport(handle), analysis)
    assert result.problem is None
    assert result.canary is not None
    assert result.canary.buckets == ((0.1, 40.0), (float("inf"), 60.0))
    assert 'sum(rate(checkout_failures_total{track="stable", version="v1"}[30s]))' in asked
    assert result.metrics[0] == MetricValue("checkout-failures", 4, 1)
    assert result.metrics[1] == DatabaseFigures(
        "database", 100, 2, (QueryLatency("select", "posts", 0.2, 0.1),)
    )


def test_a_query_giving_several_series_is_a_problem() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        return vector(({"pod": "a"}, "1"), ({"pod": "b"}, "2"))

    analysis = analysis_of({"metrics": [prometheus_metric(max=1)]})
    with httpx.Client(
        base_url="http://prometheus", transport=httpx.MockTransport(handle)
    ) as client:
        reading = read_metric(analysis.metrics[0], client, {"canary": "v2", "stable": "v1"}, 30)
    assert reading.problem is not None
    assert "gives 2 series, not one: aggregate them" in reading.problem


def test_every_request_in_one_bucket_tells_nothing_apart() -> None:
    test = mann_whitney([0, 10, 0], [0, 20, 0])
    assert test.p_value == 1.0 and test.slower_probability == 0.5
