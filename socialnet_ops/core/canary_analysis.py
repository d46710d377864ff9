"""Custom analysis metrics, the weighted score and the latency distribution test. Pure: no I/O.

`core.canary.judge` turns one measurement into checks, each passing, failing or inconclusive:
the built-in `errors` and `latency` checks, then one per custom metric of the policy
(`release.analysis.metrics`, like Argo Rollouts AnalysisTemplates or Flagger metric templates).
This module judges the custom metrics from what their providers read (`MetricValue`,
`DatabaseFigures`: the querying is in `tasks/metrics.py`), runs the Mann-Whitney latency test,
and combines the checks into one outcome:

- without `score`: any failed check fails the measurement, then any inconclusive one makes it
  inconclusive (no data never leads to promotion);
- with `score` (Kayenta): 100 x the weight of the passed checks over the weight of the judged
  ones; below `marginal` fails, from `pass` up passes, between is inconclusive. A check without
  data is left out of the score but still keeps a passing score from passing.

The Mann-Whitney U test is scipy's (`scipy.stats.mannwhitneyu`, tie-corrected normal
approximation) on samples expanded from the histogram's bucket counts: a request counts as its
bucket's rank, so every request of a bucket ties with the others of that bucket. scipy is
imported when a policy asks for the test: importing `scipy.stats` takes seconds, and every
process that loads the catalog imports this module.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from socialnet_ops.core.environments import AnalysisMetric, AnalysisScore

CheckOutcome = Literal["pass", "fail", "inconclusive"]


@dataclass(frozen=True)
class Check:
    """One check of a measurement: a built-in (`errors`, `latency`) or a custom metric."""

    name: str
    outcome: CheckOutcome
    reasons: tuple[str, ...]
    weight: float = 1.0


# --- what the providers read ---------------------------------------------------------------------


@dataclass(frozen=True)
class MetricValue:
    """A prometheus or web metric's value for the canary (and for stable, for relative bounds);
    `problem` says why there is none (the provider failed)."""

    name: str
    canary: float | None
    stable: float | None = None
    problem: str | None = None


@dataclass(frozen=True)
class QueryLatency:
    """One database query (operation on table): its latency quantile per track, in seconds."""

    operation: str
    table: str
    canary: float | None
    stable: float | None


@dataclass(frozen=True)
class DatabaseFigures:
    """The canary's database queries over the window, from the API's own metrics."""

    name: str
    queries: float
    errors: float
    latencies: tuple[QueryLatency, ...] = ()
    problem: str | None = None


MetricReading = MetricValue | DatabaseFigures


# --- judging custom metrics ----------------------------------------------------------------------


def _value(number: float) -> str:
    return f"{number:.4g}"


def _ms(seconds: float) -> str:
    return "inf" if math.isinf(seconds) else f"{seconds * 1000:.0f} ms"


def judge_metric(metric: AnalysisMetric, reading: MetricReading | None, window: str) -> Check:
    """One custom metric against its bounds."""
    if reading is None:
        return Check(metric.name, "inconclusive", (f"{metric.name}: not measured",), metric.weight)
    if reading.problem is not None:
        return Check(
            metric.name, "inconclusive", (f"{metric.name}: {reading.problem}",), metric.weight
        )
    if isinstance(reading, DatabaseFigures):
        return _judge_database(metric, reading, window)
    return _judge_value(metric, reading, window)


def _judge_value(metric: AnalysisMetric, value: MetricValue, window: str) -> Check:
    name = metric.name

    def check(outcome: CheckOutcome, reasons: list[str]) -> Check:
        return Check(name, outcome, tuple(reasons), metric.weight)

    if value.canary is None or math.isnan(value.canary):
        return check("inconclusive", [f"{name}: no value for the canary in the last {window}"])
    canary = value.canary
    failures: list[str] = []
    notes: list[str] = []
    if metric.min is not None and canary < metric.min:
        failures.append(f"{name} {_value(canary)} is below the policy's min {_value(metric.min)}")
    if metric.max is not None and canary > metric.max:
        failures.append(f"{name} {_value(canary)} is above the policy's max {_value(metric.max)}")
    if metric.has_absolute_bound and not failures:
        limits = [
            f"{label} {_value(bound)}"
            for label, bound in (("min", metric.min), ("max", metric.max))
            if bound is not None
        ]
        notes.append(f"{name} {_value(canary)} ({', '.join(limits)})")
    if metric.has_relative_bound:
        stable = value.stable
        # A stable 0 or no stable value at all is the floor: a new error counter that stable
        # never incremented still has a baseline; without a floor there is nothing to divide by.
        baseline = max(stable if stable is not None and not math.isnan(stable) else 0.0, 0.0)
        floored = ""
        if metric.floor is not None and baseline < metric.floor:
            baseline = metric.floor
            floored = f" (floored to {_value(metric.floor)})"
        stable_text = "none" if stable is None else _value(stable)
        if baseline <= 0:
            if failures:
                return check("fail", failures)
            return check(
                "inconclusive",
                [
                    f"{name}: stable's value is {stable_text}, nothing to compare the canary's "
                    f"{_value(canary)} with (set floor)",
                    *notes,
                ],
            )
        ratio = canary / baseline
        comparison = f"{name} {_value(canary)} vs stable {stable_text}{floored}: {ratio:.2f}x"
        if metric.max_ratio is not None and ratio > metric.max_ratio:
            failures.append(f"{comparison}, above the policy's max_ratio {metric.max_ratio:g}x")
        elif metric.min_ratio is not None and ratio < metric.min_ratio:
            failures.append(f"{comparison}, below the policy's min_ratio {metric.min_ratio:g}x")
        else:
            limits = [
                f"{label} {bound:g}x"
                for label, bound in (
                    ("min_ratio", metric.min_ratio),
                    ("max_ratio", metric.max_ratio),
                )
                if bound is not None
            ]
            notes.append(f"{comparison} ({', '.join(limits)})")
    return check("fail", failures) if failures else check("pass", notes)


def _judge_database(metric: AnalysisMetric, figures: DatabaseFigures, window: str) -> Check:
    name = metric.name

    def check(outcome: CheckOutcome, reasons: list[str]) -> Check:
        return Check(name, outcome, tuple(reasons), metric.weight)

    if figures.queries <= 0:
        return check(
            "inconclusive", [f"{name}: no database query from the canary in the last {window}"]
        )
    failures: list[str] = []
    notes: list[str] = []
    ratio = figures.errors / figures.queries
    errors = (
        f"{name}: query error ratio {ratio * 100:.2f}% ({figures.errors:.0f}/{figures.queries:.0f})"
    )
    if ratio > metric.max_error_ratio:
        failures.append(f"{errors}, above the policy's {metric.max_error_ratio * 100:g}%")
    else:
        notes.append(f"{errors} (limit {metric.max_error_ratio * 100:g}%)")

    # Each query against the same query on stable, the stable value floored as for the HTTP
    # latency: the slowest one decides, so one slower query fails a canary whose routes hide it
    # among fast ones. A query stable never ran is compared with the floor.
    quantile = metric.latency_quantile
    floor = metric.latency_floor
    compared: list[tuple[float, str]] = []
    for query in figures.latencies:
        if query.canary is None or math.isnan(query.canary):
            continue
        stable = query.stable if query.stable is not None and not math.isnan(query.stable) else None
        baseline = max(stable or 0.0, floor)
        stable_text = "none" if stable is None else _ms(stable)
        floored = f" (floored to {_ms(floor)})" if stable is None or stable < floor else ""
        text = (
            f"{query.operation} {query.table} {quantile} {_ms(query.canary)} vs stable "
            f"{stable_text}{floored}: {query.canary / baseline:.2f}x"
        )
        compared.append((query.canary / baseline, text))
    if not compared:
        notes.append(f"no {quantile} query latency for the canary")
    else:
        worst_ratio, worst = max(compared, key=lambda item: item[0])
        if worst_ratio > metric.max_latency_ratio:
            failures.append(
                f"{name}: slowest query {worst}, above the policy's {metric.max_latency_ratio:g}x"
            )
        else:
            notes.append(
                f"slowest of {len(compared)} queries {worst} (limit {metric.max_latency_ratio:g}x)"
            )
    return check("fail", failures) if failures else check("pass", notes)


# --- latency distributions -----------------------------------------------------------------------


Histogram = Sequence[tuple[float, float]]  # (upper bound `le`, cumulative count), as Prometheus


def bucket_counts(canary: Histogram, stable: Histogram) -> tuple[list[int], list[int]]:
    """Requests per bucket of each track, on the union of both tracks' bucket bounds.

    `increase()` extrapolates to the window's edges, so counts are fractional and a bucket's
    cumulative count can dip below the previous one: each count is rounded and kept >= 0.
    """
    bounds = sorted({le for le, _ in canary} | {le for le, _ in stable})

    def per_bucket(histogram: Histogram) -> list[int]:
        cumulative = dict(histogram)
        counts, below, carried = [], 0.0, 0.0
        for le in bounds:
            carried = cumulative.get(le, carried)  # a bound the track lacks: no request in it
            counts.append(max(0, round(carried - below)))
            below = max(below, carried)
        return counts

    return per_bucket(canary), per_bucket(stable)


@dataclass(frozen=True)
class MannWhitney:
    p_value: float
    # P(a canary request is slower than a stable one), ties counting half: 0.5 when the
    # distributions are the same (the common-language effect size, U / (n1 x n2)).
    slower_probability: float
    canary_requests: int
    stable_requests: int


def mann_whitney(canary_counts: Sequence[int], stable_counts: Sequence[int]) -> MannWhitney:
    """One-sided Mann-Whitney U test (H1: canary requests are slower) on binned latencies."""
    import numpy as np
    from scipy.stats import mannwhitneyu

    ranks = np.arange(len(canary_counts))
    canary = np.repeat(ranks, np.asarray(canary_counts, dtype=np.int64))
    stable = np.repeat(ranks, np.asarray(stable_counts, dtype=np.int64))
    n1, n2 = len(canary), len(stable)
    if n1 == 0 or n2 == 0:
        raise ValueError("both tracks need at least one request")
    result = mannwhitneyu(canary, stable, alternative="greater", method="asymptotic")
    p_value = float(result.pvalue)
    # Every request in one bucket: no variance, nothing tells the tracks apart.
    return MannWhitney(
        p_value=1.0 if math.isnan(p_value) else p_value,
        slower_probability=float(result.statistic) / (n1 * n2),
        canary_requests=n1,
        stable_requests=n2,
    )


def latency_distribution_check(
    canary: Histogram,
    stable: Histogram,
    significance: float,
    max_slower_probability: float,
    window: str,
    weight: float = 1.0,
) -> Check:
    """The built-in `latency` check with `latency_test: mann_whitney`: fails only when the canary
    is significantly slower AND materially so (at high traffic any difference is significant)."""

    def check(outcome: CheckOutcome, reason: str) -> Check:
        return Check("latency", outcome, (reason,), weight)

    canary_counts, stable_counts = bucket_counts(canary, stable)
    if sum(canary_counts) == 0:
        return check("inconclusive", f"no latency histogram for the canary in {window}")
    if sum(stable_counts) == 0:
        return check("pass", "latency distribution: no stable request to compare with")
    test = mann_whitney(canary_counts, stable_counts)
    described = (
        f"latency distribution: P(canary request slower than stable) "
        f"{test.slower_probability:.2f}, Mann-Whitney p={test.p_value:.3g} "
        f"({test.canary_requests} vs {test.stable_requests} requests)"
    )
    significant = test.p_value < significance
    material = test.slower_probability >= max_slower_probability
    if significant and material:
        return check(
            "fail",
            f"{described}: significantly slower (p < {significance:g}) and materially so "
            f"(>= the policy's {max_slower_probability:g})",
        )
    if significant:
        return check(
            "pass",
            f"{described}: significant (p < {significance:g}) but below the policy's "
            f"{max_slower_probability:g}, not material",
        )
    return check("pass", f"{described} (limit {max_slower_probability:g})")


# --- combining the checks ------------------------------------------------------------------------


@dataclass(frozen=True)
class Combined:
    outcome: CheckOutcome
    reasons: tuple[str, ...]
    score: float | None = None


def combine(checks: Iterable[Check], score: AnalysisScore | None) -> Combined:
    """The measurement's outcome from its checks (module docstring)."""
    checks = list(checks)
    by_outcome = {
        outcome: [check for check in checks if check.outcome == outcome]
        for outcome in ("pass", "fail", "inconclusive")
    }
    if score is None:
        if by_outcome["fail"]:
            return Combined("fail", _reasons(by_outcome["fail"]))
        if by_outcome["inconclusive"]:
            return Combined(
                "inconclusive", _reasons(by_outcome["inconclusive"] + by_outcome["pass"])
            )
        return Combined("pass", _reasons(by_outcome["pass"]))

    judged = by_outcome["pass"] + by_outcome["fail"]
    listed = tuple(
        f"{check.name} {check.outcome} (weight {check.weight:g}): {'; '.join(check.reasons)}"
        for check in checks
    )
    if not judged:
        return Combined("inconclusive", ("score: no check could be judged", *listed))
    value = 100 * sum(c.weight for c in by_outcome["pass"]) / sum(c.weight for c in judged)
    thresholds = f"pass >= {score.pass_:g}, marginal >= {score.marginal:g}"
    missing = len(by_outcome["inconclusive"])
    if value < score.marginal:
        outcome: CheckOutcome = "fail"
        summary = f"score {value:.0f} ({thresholds}): fail"
    elif missing:
        outcome = "inconclusive"
        summary = (
            f"score {value:.0f} of the judged checks ({thresholds}), {missing} check(s) without "
            "data: inconclusive"
        )
    elif value >= score.pass_:
        outcome = "pass"
        summary = f"score {value:.0f} ({thresholds}): pass"
    else:
        outcome = "inconclusive"
        summary = f"score {value:.0f} ({thresholds}): marginal, inconclusive"
    return Combined(outcome, (summary, *listed), value)


def _reasons(checks: list[Check]) -> tuple[str, ...]:
    return tuple(reason for check in checks for reason in check.reasons)
