"""The environment catalog: one YAML file per environment, loaded into typed models.

Every error names the file, the key and the reason, e.g.
``deployments/environments/staging.yaml: release.steps[2].set_weight: 120 is above 100``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

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


_STEP_KINDS = ("set_weight", "pause", "analysis")


def _step_kind(value: Any) -> str | None:
    if isinstance(value, BaseModel):
        return next(kind for kind in _STEP_KINDS if kind in type(value).model_fields)
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in _STEP_KINDS:
        return None
    return str(next(iter(value)))


CanaryStep = Annotated[
    Annotated[SetWeightStep, Tag("set_weight")]
    | Annotated[PauseStep, Tag("pause")]
    | Annotated[AnalysisStep, Tag("analysis")],
    Discriminator(
        _step_kind,
        custom_error_type="step_kind",
        custom_error_message="a step is one key of set_weight, pause or analysis",
    ),
]


class Analysis(Model):
    interval: Duration = 30.0
    min_requests: Annotated[int, Field(ge=1)] = 50
    max_error_ratio: Annotated[float, Field(ge=0, le=1)] = 0.05
    significance: Annotated[float, Field(gt=0, lt=1)] = 0.05
    max_latency_ratio: Annotated[float, Field(ge=1)] = 1.5
    latency_quantile: Literal["p95", "p99"] = "p95"
    failure_limit: Annotated[int, Field(ge=0)] = 0
    inconclusive_limit: Annotated[int, Field(ge=0)] = 3


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


class ReleasePolicy(Model):
    strategy: Literal["rolling", "canary"] = "rolling"
    steps: list[CanaryStep] = Field(default_factory=list)
    analysis: Analysis = Field(default_factory=Analysis)
    rollback_on_failure: bool = True
    allow_contracting_migrations: bool = False
    # A canary left in flight by a run that died (SIGKILL, lost worker): the next run of the
    # environment aborts it first, or resumes it from its stored step.
    on_interrupted: Literal["abort", "resume"] = "abort"
    traffic: TrafficPolicy = Field(default_factory=TrafficPolicy)

    @model_validator(mode="after")
    def _weights_climb_to_100(self) -> ReleasePolicy:
        if "traffic" in self.model_fields_set and self.strategy != "canary":
            raise ValueError("traffic: header, cookie and sticky routing need strategy: canary")
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
        return self


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


class BackupPolicy(Model):
    schedule: Cron
    base_backup_schedule: Cron | None = None
    drill_schedule: Cron | None = None
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
