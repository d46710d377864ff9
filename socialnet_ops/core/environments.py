"""The environment catalog: one YAML file per environment, loaded into typed models.

Every error names the file, the key and the reason, e.g.
``deployments/environments/staging.yaml: release.steps[2].set_weight: 120 is above 100``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from croniter import croniter
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    model_validator,
)

from socialnet_ops.core.paths import environments_dir, repo_root

ENVIRONMENT_NAME = r"^[a-z][a-z0-9-]{0,30}$"


class EnvironmentError(Exception):
    """A catalog file that cannot be used; the message names file, key and reason."""


class UnknownEnvironmentError(EnvironmentError):
    pass


# --- value types -------------------------------------------------------------------------------

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def _parse_duration(value: Any) -> float:
    """Accept 30, "30s", "2m", "1h" (seconds when no unit)."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '30s', '2m', '1h'")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a duration like '30s', '2m' or '1h'")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def _check_cron(expression: str) -> str:
    if not croniter.is_valid(expression):
        raise ValueError(
            f"{expression!r} is not a valid cron expression (5 fields: m h dom mon dow)"
        )
    return expression


Duration = Annotated[float, BeforeValidator(_parse_duration)]
Cron = Annotated[str, AfterValidator(_check_cron)]
Percent = Annotated[int, Field(ge=0, le=100)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- platform ----------------------------------------------------------------------------------


class Resources(Model):
    cpu: str = "250m"
    memory: str = "256Mi"


class LocalPlatform(Model):
    kind: Literal["local"]
    api_replicas: Annotated[int, Field(ge=1, le=16)] = 2
    canary_replicas: Annotated[int, Field(ge=1, le=8)] = 1
    ready_timeout: Duration = 30.0
    drain_timeout: Duration = 10.0
    # containers: builds carry images pushed to the platform's registry and replicas run them
    # (processes, saying why, where no container engine works); processes: never build images.
    runtime: Literal["containers", "processes"] = "containers"


class KubernetesPlatform(Model):
    kind: Literal["kubernetes"]
    context: str
    namespace: str = "socialnet"
    kubernetes_version: Annotated[str, Field(pattern=r"^1\.\d+$")] = "1.32"
    release_name: str = "socialnet"
    values_file: str
    api_replicas: Annotated[int, Field(ge=1, le=100)] = 2
    front_replicas: Annotated[int, Field(ge=1, le=100)] = 2
    canary_replicas: Annotated[int, Field(ge=1, le=20)] = 1
    resources: dict[Literal["api", "front", "database"], Resources] = Field(default_factory=dict)
    rollout_timeout: Duration = 300.0
    # Where the control plane pushes the images it builds (host[:port][/path]); the chart then
    # pins them by digest. None: the builds carry no images and the chart deploys version tags.
    registry: str | None = None


Platform = Annotated[LocalPlatform | KubernetesPlatform, Field(discriminator="kind")]


# --- cloud, provisioning, configuration, secrets -----------------------------------------------


class Cloud(Model):
    provider: Literal["aws"] = "aws"
    region: str = "eu-west-3"
    # None means the provider's real endpoint; "local" means the local platform's AWS emulator.
    endpoint: str | None = None


class TerraformBackend(Model):
    bucket: str
    key: str
    region: str | None = None


class Terraform(Model):
    stack: str
    backend: TerraformBackend
    variables: dict[str, Any] = Field(default_factory=dict)


class AnsibleInventory(Model):
    # "terraform": node addresses from the provision flow's outputs; "launcher": local test nodes.
    source: Literal["terraform", "launcher", "static"]
    path: str | None = None
    groups: dict[str, int] = Field(default_factory=lambda: {"control_plane": 1, "workers": 2})


class VaultAuth(Model):
    method: Literal["approle", "token"] = "approle"
    role: str
    secret_id_file: str | None = None


class Vault(Model):
    # "local" means the local platform's OpenBao server.
    address: str
    mount: str = "socialnet"
    auth: VaultAuth


# --- release policy ----------------------------------------------------------------------------


class SetWeightStep(Model):
    set_weight: Percent


class PauseSpec(Model):
    duration: Duration | None = None
    until_approved: bool = False
    timeout: Duration = 3600.0

    @model_validator(mode="after")
    def _timed_or_gated(self) -> PauseSpec:
        if self.duration is None and not self.until_approved:
            raise ValueError("a pause needs a duration or until_approved: true")
        return self


class PauseStep(Model):
    pause: PauseSpec


class AnalysisSpec(Model):
    duration: Duration = 120.0


class AnalysisStep(Model):
    analysis: AnalysisSpec


# Flagger's webhooks as steps. A hook is a command (run by the flow, with the canary's address in
# its environment) or a URL (POSTed a JSON payload); it says yes by exiting 0 / answering 2xx.
HOOK_URL = r"^https?://\S+$"


class HookSpec(Model):
    command: Annotated[list[str], Field(min_length=1)] | None = None
    url: Annotated[str, Field(pattern=HOOK_URL)] | None = None
    timeout: Duration = 60.0

    @model_validator(mode="after")
    def _command_or_url(self) -> HookSpec:
        if (self.command is None) == (self.url is None):
            raise ValueError("a hook is either a command (a list of words) or a url")
        return self


class PreRolloutStep(Model):
    """A test suite against the canary's own address before any user reaches it."""

    pre_rollout: HookSpec


class ConfirmSpec(Model):
    """A gate: `url` is asked every `interval` until it answers 2xx (yes) or 409/403 (no); with no
    url a person answers in the Prefect UI, as at `pause: {until_approved: true}`."""

    url: Annotated[str, Field(pattern=HOOK_URL)] | None = None
    timeout: Duration = 3600.0
    interval: Duration = 5.0


class ConfirmRolloutStep(Model):
    confirm_rollout: ConfirmSpec


class ConfirmPromotionStep(Model):
    confirm_promotion: ConfirmSpec


class LoadTestSpec(Model):
    """Bounded synthetic traffic to both tracks' own addresses (equal rates), so a quiet service
    gets a verdict; it runs from its step for `duration` or until the canary ends."""

    rate: Annotated[float, Field(gt=0, le=200)] = 10.0
    duration: Annotated[float, BeforeValidator(_parse_duration), Field(gt=0, le=3600)] = 600.0
    paths: Annotated[list[Annotated[str, Field(pattern=r"^/\S*$")]], Field(min_length=1)] = Field(
        default_factory=lambda: ["/api/timeline"]
    )


class LoadTestStep(Model):
    load_test: LoadTestSpec


class PostRolloutSpec(Model):
    """After the canary ends, promoted or aborted: a notification through the alert block and/or a
    POST to `url`. Its failure is logged; it never changes the outcome."""

    notify: bool = True
    url: Annotated[str, Field(pattern=HOOK_URL)] | None = None
    timeout: Duration = 30.0


class PostRolloutStep(Model):
    post_rollout: PostRolloutSpec


StepKind = Literal[
    "set_weight",
    "pause",
    "analysis",
    "pre_rollout",
    "confirm_rollout",
    "confirm_promotion",
    "load_test",
    "post_rollout",
]
_STEP_KINDS: tuple[str, ...] = get_args(StepKind)


def _step_kind(value: Any) -> str | None:
    if isinstance(value, BaseModel):
        return next(kind for kind in _STEP_KINDS if kind in type(value).model_fields)
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in _STEP_KINDS:
        return None
    return str(next(iter(value)))


CanaryStep = Annotated[
    Annotated[SetWeightStep, Tag("set_weight")]
    | Annotated[PauseStep, Tag("pause")]
    | Annotated[AnalysisStep, Tag("analysis")]
    | Annotated[PreRolloutStep, Tag("pre_rollout")]
    | Annotated[ConfirmRolloutStep, Tag("confirm_rollout")]
    | Annotated[ConfirmPromotionStep, Tag("confirm_promotion")]
    | Annotated[LoadTestStep, Tag("load_test")]
    | Annotated[PostRolloutStep, Tag("post_rollout")],
    Discriminator(
        _step_kind,
        custom_error_type="step_kind",
        custom_error_message=f"a step is one key of {', '.join(_STEP_KINDS)}",
    ),
]


# --- custom analysis metrics (Argo AnalysisTemplates, Flagger metric templates) ---------------

# `{name}` with a bare name is a placeholder: PromQL's own braces always hold matchers
# (`{track="canary"}`), never a bare name, so a query keeps its selectors as written.
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
PLACEHOLDERS = ("track", "version", "window")
# The built-in checks' names: a custom metric cannot take them.
BUILTIN_CHECKS = ("errors", "latency")
METRIC_NAME = r"^[a-z][a-z0-9_-]{0,62}$"


def _check_placeholders(template: str) -> str:
    unknown = sorted({name for name in PLACEHOLDER.findall(template) if name not in PLACEHOLDERS})
    if unknown:
        known = ", ".join(f"{{{name}}}" for name in PLACEHOLDERS)
        raise ValueError(
            f"unknown placeholder {', '.join(f'{{{name}}}' for name in unknown)}; known: {known}"
        )
    return template


def _check_json_path(path: str) -> str:
    # Parsed when the policy loads, so a typo fails there and not at a canary's first measurement.
    # Imported here: jsonpath-ng builds its parser on import, and most catalogs have no web metric.
    from jsonpath_ng.ext import parse as parse_json_path

    try:
        parse_json_path(path)
    except Exception as error:  # jsonpath-ng's lexer and parser raise several kinds
        raise ValueError(f"not a JSON path: {str(error).splitlines()[0]}") from None
    return path


Template = Annotated[str, Field(min_length=1), AfterValidator(_check_placeholders)]
JsonPath = Annotated[str, Field(min_length=1), AfterValidator(_check_json_path)]

_PROVIDER_FIELDS = {
    "prometheus": {"query", "min", "max", "min_ratio", "max_ratio", "floor"},
    "web": {"url", "json_path", "timeout", "min", "max", "min_ratio", "max_ratio", "floor"},
    "database": {"max_error_ratio", "max_latency_ratio", "latency_quantile", "latency_floor"},
}
_COMMON_FIELDS = {"name", "provider", "weight"}


class AnalysisMetric(Model):
    """One custom check of the canary. Which fields apply depends on `provider`:

    - prometheus: `query`, a PromQL template, rendered for the canary (`{track}` = canary,
      `{version}` = its version, `{window}` = the analysis window, e.g. `30s`);
    - web: `url` answering JSON (same placeholders) and `json_path` to the number;
    - database: the API's `db_queries_total` / `db_query_duration_seconds`, built in.

    Bounds of prometheus and web metrics: `min`/`max` on the canary's value, or
    `min_ratio`/`max_ratio` on canary / stable (the template rendered for the stable track and
    version), with stable's value raised to `floor` first (a stable 0 or no value at all is the
    floor; with no floor, a canary compared with no stable value is inconclusive).
    """

    name: Annotated[str, Field(pattern=METRIC_NAME)]
    provider: Literal["prometheus", "web", "database"]
    # Counts in the analysis score (`score`); without a score any failed metric fails.
    weight: Annotated[float, Field(gt=0)] = 1.0
    query: Template | None = None
    url: Template | None = None
    json_path: JsonPath | None = None
    timeout: Annotated[Duration, Field(gt=0, le=60)] = 5.0
    min: float | None = None
    max: float | None = None
    min_ratio: Annotated[float, Field(gt=0)] | None = None
    max_ratio: Annotated[float, Field(gt=0)] | None = None
    floor: Annotated[float, Field(gt=0)] | None = None
    # database: the canary's query error ratio, and each query's latency over stable's
    max_error_ratio: Annotated[float, Field(ge=0, le=1)] = 0.01
    max_latency_ratio: Annotated[float, Field(ge=1)] = 1.5
    latency_quantile: Literal["p95", "p99"] = "p95"
    latency_floor: Annotated[Duration, Field(gt=0)] = 0.01

    @model_validator(mode="after")
    def _fits_its_provider(self) -> AnalysisMetric:
        allowed = _PROVIDER_FIELDS[self.provider] | _COMMON_FIELDS
        foreign = sorted(self.model_fields_set - allowed)
        if foreign:
            raise ValueError(f"{foreign[0]}: not a field of a {self.provider} metric")
        if self.provider == "database":
            return self
        template_field = "query" if self.provider == "prometheus" else "url"
        template = self.query if self.provider == "prometheus" else self.url
        if template is None:
            raise ValueError(f"{template_field}: a {self.provider} metric needs one")
        if self.provider == "web" and self.json_path is None:
            raise ValueError("json_path: a web metric needs one, e.g. $.status.ratio")
        if not (self.has_absolute_bound or self.has_relative_bound):
            raise ValueError(
                "a metric needs a bound: min or max (on the canary's value), or min_ratio or "
                "max_ratio (canary / stable)"
            )
        if self.has_relative_bound and not {"track", "version"} & set(
            PLACEHOLDER.findall(template)
        ):
            raise ValueError(
                f"{template_field}: a relative bound (min_ratio/max_ratio) needs {{track}} or "
                "{version} in it, or canary and stable read the same value"
            )
        if self.floor is not None and not self.has_relative_bound:
            raise ValueError("floor: only for a relative bound (min_ratio/max_ratio)")
        for low, high in (("min", "max"), ("min_ratio", "max_ratio")):
            low_value, high_value = getattr(self, low), getattr(self, high)
            if low_value is not None and high_value is not None and low_value > high_value:
                raise ValueError(f"{low}: {low_value} is above {high} {high_value}")
        return self

    @property
    def has_absolute_bound(self) -> bool:
        return self.min is not None or self.max is not None

    @property
    def has_relative_bound(self) -> bool:
        return self.min_ratio is not None or self.max_ratio is not None


class AnalysisScore(Model):
    """Kayenta-style thresholds of the weighted score (0-100) of the checks that were judged."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    pass_: Annotated[float, Field(ge=0, le=100, alias="pass")] = 90.0
    marginal: Annotated[float, Field(ge=0, le=100)] = 75.0

    @model_validator(mode="after")
    def _marginal_below_pass(self) -> AnalysisScore:
        if self.marginal > self.pass_:
            raise ValueError(f"marginal: {self.marginal:g} is above pass {self.pass_:g}")
        return self


class BuiltinWeights(Model):
    """Weights of the built-in checks in the score."""

    errors: Annotated[float, Field(gt=0)] = 1.0
    latency: Annotated[float, Field(gt=0)] = 1.0


class Analysis(Model):
    interval: Duration = 30.0
    min_requests: Annotated[int, Field(ge=1)] = 50
    max_error_ratio: Annotated[float, Field(ge=0, le=1)] = 0.05
    significance: Annotated[float, Field(gt=0, lt=1)] = 0.05
    max_latency_ratio: Annotated[float, Field(ge=1)] = 1.5
    latency_quantile: Literal["p95", "p99"] = "p95"
    failure_limit: Annotated[int, Field(ge=0)] = 0
    inconclusive_limit: Annotated[int, Field(ge=0)] = 3
    # Custom checks besides the built-in `errors` and `latency` (README: "Analysis metrics").
    metrics: list[AnalysisMetric] = Field(default_factory=list)
    # None: any failed check fails the measurement; else the weighted score decides.
    score: AnalysisScore | None = None
    builtin_weights: BuiltinWeights = Field(default_factory=BuiltinWeights)
    # quantile: the latency_quantile ratio; mann_whitney: the whole latency distributions, failing
    # when the canary is significantly and materially slower (max_slower_probability).
    latency_test: Literal["quantile", "mann_whitney"] = "quantile"
    max_slower_probability: Annotated[float, Field(gt=0.5, lt=1)] = 0.6

    @model_validator(mode="after")
    def _metric_names_unique(self) -> Analysis:
        seen: set[str] = set()
        for index, metric in enumerate(self.metrics):
            if metric.name in BUILTIN_CHECKS:
                raise ValueError(
                    f"metrics[{index}].name: {metric.name!r} is a built-in check's name"
                )
            if metric.name in seen:
                raise ValueError(f"metrics[{index}].name: {metric.name!r} is used twice")
            seen.add(metric.name)
        return self


# Header and cookie names go verbatim into HAProxy's config and ingress-nginx annotations.
HEADER_NAME = r"^[A-Za-z][A-Za-z0-9-]{0,62}$"
COOKIE_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$"
ROUTING_VALUE = r"^[A-Za-z0-9_.~-]{1,64}$"
# The cookie the edge sets to keep a user on the track that served them (sticky: true).
STICKY_COOKIE = "socialnet-track"


class TrafficPolicy(Model):
    """Who reaches the canary besides its weight share (Argo/Flagger header and cookie routing).

    weighted: header/cookie requests always reach the canary (weight 0 included), the others by
    weight; ab: only header/cookie requests reach it, the weight steps send users nothing.
    """

    mode: Literal["weighted", "ab"] = "weighted"
    header: Annotated[str, Field(pattern=HEADER_NAME)] | None = None
    header_value: Annotated[str, Field(pattern=ROUTING_VALUE)] = "always"
    # A request with this cookie set to "always" reaches the canary, "never" stays on stable.
    cookie: Annotated[str, Field(pattern=COOKIE_NAME)] | None = None
    # A user the weight sent to a track keeps it while the canary exists (a cookie of the edge).
    sticky: bool = False

    @model_validator(mode="after")
    def _coherent(self) -> TrafficPolicy:
        if self.mode == "ab" and not (self.header or self.cookie):
            raise ValueError("mode ab routes by header or cookie only: set header or cookie")
        if self.mode == "ab" and self.sticky:
            raise ValueError("sticky keeps users on the track their weight gave; mode ab has none")
        if self.cookie == STICKY_COOKIE:
            raise ValueError(f"cookie {STICKY_COOKIE!r} is the edge's own sticky cookie")
        return self

    @property
    def routes_by_request(self) -> bool:
        return bool(self.header or self.cookie)


class BlueGreen(Model):
    """Argo Rollouts' blue-green, on the canary's mechanics: the new release starts beside the old
    at weight 0 (the preview, reached at its own address and by header/cookie), is judged there
    on a load test to both tracks' own addresses, then takes all users at once (weight 100). The
    old release stays up for `scale_down_delay` while the post-promotion analysis runs; a failure
    switches everyone back at once (weight 0)."""

    pre_promotion_analysis: AnalysisSpec = Field(default_factory=lambda: AnalysisSpec(duration=60))
    post_promotion_analysis: AnalysisSpec | None = Field(
        default_factory=lambda: AnalysisSpec(duration=60)
    )
    scale_down_delay: Duration = 30.0
    # Argo's autoPromotionEnabled: false is a gate before the switch (a person or a URL says yes).
    auto_promote: bool = True
    confirm_url: Annotated[str, Field(pattern=HOOK_URL)] | None = None
    preview_load: LoadTestSpec = Field(default_factory=LoadTestSpec)

    def steps(self) -> list[CanaryStep]:
        steps: list[CanaryStep] = [
            LoadTestStep(load_test=self.preview_load),
            AnalysisStep(analysis=self.pre_promotion_analysis),
        ]
        if not self.auto_promote:
            steps.append(ConfirmPromotionStep(confirm_promotion=ConfirmSpec(url=self.confirm_url)))
        steps.append(SetWeightStep(set_weight=100))
        if self.post_promotion_analysis is not None:
            steps.append(AnalysisStep(analysis=self.post_promotion_analysis))
        if self.scale_down_delay > 0:
            steps.append(PauseStep(pause=PauseSpec(duration=self.scale_down_delay)))
        return steps


class ReleasePolicy(Model):
    strategy: Literal["rolling", "canary", "blue_green"] = "rolling"
    steps: list[CanaryStep] = Field(default_factory=list)
    blue_green: BlueGreen | None = None
    analysis: Analysis = Field(default_factory=Analysis)
    rollback_on_failure: bool = True
    allow_contracting_migrations: bool = False
    # A canary left in flight by a run that died (SIGKILL, lost worker): the next run of the
    # environment aborts it first, or resumes it from its stored step.
    on_interrupted: Literal["abort", "resume"] = "abort"
    traffic: TrafficPolicy = Field(default_factory=TrafficPolicy)

    @property
    def progressive(self) -> bool:
        """Released beside the serving build and judged (canary, blue-green), not rolled."""
        return self.strategy in {"canary", "blue_green"}

    @property
    def walked_steps(self) -> list[CanaryStep]:
        """The steps the canary flow walks: the policy's, or those blue-green stands for."""
        if self.strategy == "blue_green":
            return (self.blue_green or BlueGreen()).steps()
        return self.steps

    @model_validator(mode="after")
    def _weights_climb_to_100(self) -> ReleasePolicy:
        if "traffic" in self.model_fields_set and not self.progressive:
            raise ValueError(
                "traffic: header, cookie and sticky routing need strategy: canary or blue_green"
            )
        if self.strategy == "blue_green" and self.steps:
            raise ValueError(
                "steps: blue_green walks the steps release.blue_green stands for; remove steps"
            )
        if self.blue_green is not None and self.strategy != "blue_green":
            raise ValueError("blue_green: set strategy: blue_green to use it")
        weights = [step.set_weight for step in self.steps if isinstance(step, SetWeightStep)]
        if self.strategy == "canary" and not weights:
            raise ValueError("steps: a canary policy needs set_weight steps ending at 100")
        if weights and weights[-1] != 100:
            raise ValueError(
                f"steps: the last set_weight is {weights[-1]}, weights must end at 100"
            )
        for before, after in itertools.pairwise(weights):
            if after < before:
                raise ValueError(f"steps: weight goes down from {before} to {after}")
        self._check_hook_places()
        return self

    def _check_hook_places(self) -> None:
        """Hooks that guard user traffic come before any; the post-rollout hook ends the list."""
        first_traffic = next(
            (
                index
                for index, step in enumerate(self.steps)
                if isinstance(step, SetWeightStep) and step.set_weight > 0
            ),
            len(self.steps),
        )
        for index, step in enumerate(self.steps):
            kind = _step_kind(step)
            if kind in {"pre_rollout", "confirm_rollout"} and index > first_traffic:
                raise ValueError(
                    f"steps[{index}].{kind}: it guards user traffic, so it comes before the "
                    f"first set_weight above 0 (steps[{first_traffic}])"
                )
            if kind == "post_rollout" and index != len(self.steps) - 1:
                raise ValueError(
                    f"steps[{index}].post_rollout: it runs once the canary ended, so it is the "
                    "last step"
                )
        if sum(isinstance(step, LoadTestStep) for step in self.steps) > 1:
            raise ValueError("steps: one load_test at most (it runs until the canary ends)")


# --- backups -----------------------------------------------------------------------------------


class Retention(Model):
    daily: Annotated[int, Field(ge=0)] = 7
    weekly: Annotated[int, Field(ge=0)] = 4
    monthly: Annotated[int, Field(ge=0)] = 12
    on_demand_days: Annotated[
        int,
        Field(
            ge=0,
            description="Days a manual or pre-deploy backup is kept whatever the daily, weekly "
            "and monthly rules pick: a later scheduled backup of the same day does not replace it.",
        ),
    ] = 7

    @model_validator(mode="after")
    def _keeps_something(self) -> Retention:
        if self.daily + self.weekly + self.monthly == 0:
            raise ValueError("retention keeps nothing: set daily, weekly or monthly above 0")
        return self


class PhysicalBackupPolicy(Model):
    """pgBackRest's part of the policy: which type a base backup takes, how it is stored and
    kept, and what the point-in-time drills and the release guard hold it to."""

    full_every: Annotated[Duration, Field(gt=0)] = 7 * 86400.0
    diff_every: Annotated[Duration, Field(gt=0)] = 86400.0
    process_max: Annotated[int, Field(ge=1, le=16)] = 2
    compress: Literal["zst", "lz4"] = "zst"
    keep_full: Annotated[int, Field(ge=1)] = 2
    recovery_window: Annotated[Duration, Field(gt=0)] | None = 14 * 86400.0
    copy_bucket: str | None = None
    marker_schedule: Cron | None = None
    drill_schedule: Cron | None = None
    rto_objective: Annotated[Duration, Field(gt=0)] = 900.0
    rpo_objective: Annotated[Duration, Field(gt=0)] = 600.0
    guard_releases: bool = False
    max_backup_age: Annotated[Duration, Field(gt=0)] = 26 * 3600.0
    max_drill_age: Annotated[Duration, Field(gt=0)] = 8 * 86400.0

    @model_validator(mode="after")
    def _full_after_diff(self) -> PhysicalBackupPolicy:
        if self.diff_every > self.full_every:
            raise ValueError("diff_every is longer than full_every: no differential would run")
        return self


class BackupPolicy(Model):
    schedule: Cron
    base_backup_schedule: Cron | None = None
    drill_schedule: Cron | None = None
    physical: PhysicalBackupPolicy = Field(default_factory=PhysicalBackupPolicy)
    retention: Retention = Field(default_factory=Retention)
    bucket: str
    database: str = "socialnet"


class Promotion(Model):
    source: str


# --- the environment ---------------------------------------------------------------------------


class Environment(Model):
    name: Annotated[str, Field(pattern=ENVIRONMENT_NAME)]
    description: str = ""
    platform: Platform
    domain: str
    dns_zone: str
    cloud: Cloud = Field(default_factory=Cloud)
    terraform: Terraform
    ansible: AnsibleInventory
    vault: Vault
    release: ReleasePolicy = Field(default_factory=ReleasePolicy)
    backup: BackupPolicy | None = None
    promotion: Promotion | None = None
    drift_schedule: Cron | None = None

    @property
    def is_local(self) -> bool:
        return isinstance(self.platform, LocalPlatform)


# --- loading -----------------------------------------------------------------------------------


def _location(loc: Sequence[int | str], document: Any) -> str:
    """Turn a pydantic error location into `release.steps[2].set_weight`.

    Union members ('SetWeightStep', 'local', ...) that pydantic inserts into the location are
    dropped: the user's file does not contain them.
    """
    parts: list[str] = []
    node = document
    # Discriminated unions put their tag before the field of the same name: drop the tag.
    loc = [
        item
        for index, item in enumerate(loc)
        if item not in _STEP_KINDS or list(loc[index + 1 :][:1]) != [item]
    ]
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
            node = node[item] if isinstance(node, list) and item < len(node) else None
        elif isinstance(node, dict) and item in node:
            parts.append(f".{item}" if parts else item)
            node = node[item]
        elif node is None or item in {"local", "kubernetes"}:
            continue
        else:
            parts.append(f".{item}" if parts else item)
            node = None
    return "".join(parts) or "(top level)"


def _describe(error: Any, document: Any) -> str:
    location = _location(error["loc"], document)
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    elif error["type"] == "missing":
        message = "missing field"
    elif error["type"] in {"less_than_equal", "less_than"}:
        message = f"{error['input']!r} is above {error['ctx'].get('le', error['ctx'].get('lt'))}"
    elif error["type"] in {"greater_than_equal", "greater_than"}:
        message = f"{error['input']!r} is below {error['ctx'].get('ge', error['ctx'].get('gt'))}"
    elif "input" in error and error["type"] not in {"model_type", "union_tag_invalid"}:
        message = (
            f"{error['input']!r}: {message}" if not isinstance(error["input"], dict) else message
        )
    return f"{location}: {message}"


def _display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(repo_root()))
    except ValueError:
        return str(path)


def parse_environment(document: Any, source: str) -> Environment:
    """Validate an already-parsed YAML document; errors are prefixed with `source`."""
    if not isinstance(document, dict):
        raise EnvironmentError(
            f"{source}: the file must hold a mapping of keys, not {type(document).__name__}"
        )
    try:
        return Environment.model_validate(document)
    except ValidationError as error:
        # Union branches produce one error per member; report each place once, most specific first.
        seen: dict[str, str] = {}
        for item in error.errors():
            line = _describe(item, document)
            seen.setdefault(line.split(":", 1)[0], line)
        details = "\n".join(f"{source}: {line}" for line in seen.values())
        raise EnvironmentError(details) from None


def _yaml_problem(error: yaml.YAMLError) -> str:
    """`line:column: not valid YAML: problem`, one line (PyYAML's own text is six)."""
    mark = getattr(error, "problem_mark", None)
    where = f"{mark.line + 1}:{mark.column + 1}:" if mark is not None else ""
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    context = getattr(error, "context", None)
    return f"{where} not valid YAML: {problem}" + (f" ({context})" if context else "")


def load_environment_file(path: Path) -> Environment:
    source = _display_path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise EnvironmentError(f"{source}: file not found") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise EnvironmentError(f"{source}:{_yaml_problem(error)}") from None
    environment = parse_environment(document, source)
    if environment.name != path.stem:
        raise EnvironmentError(
            f"{source}: name: {environment.name!r} differs from the file name {path.stem!r}"
        )
    return environment


def environment_names(directory: Path | None = None) -> list[str]:
    folder = directory or environments_dir()
    return sorted(path.stem for path in folder.glob("*.yaml"))


def load_environment(name: str, directory: Path | None = None) -> Environment:
    folder = directory or environments_dir()
    if not re.match(ENVIRONMENT_NAME, name):
        raise UnknownEnvironmentError(
            f"{name!r} is not an environment name (lowercase letters, digits, '-')"
        )
    path = folder / f"{name}.yaml"
    if not path.exists():
        known = ", ".join(environment_names(folder)) or "none"
        raise UnknownEnvironmentError(
            f"unknown environment {name!r}; known: {known} (in {_display_path(folder)})"
        )
    return load_environment_file(path)


def load_catalog(directory: Path | None = None) -> dict[str, Environment]:
    """Every environment, validated together: promotion sources must exist."""
    folder = directory or environments_dir()
    catalog = {name: load_environment(name, folder) for name in environment_names(folder)}
    for environment in catalog.values():
        if environment.promotion and environment.promotion.source not in catalog:
            raise EnvironmentError(
                f"{_display_path(folder / (environment.name + '.yaml'))}: promotion.source: "
                f"{environment.promotion.source!r} is not an environment of the catalog"
            )
    return catalog
