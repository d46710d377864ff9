"""Pieces every release flow shares: the environment's slot and input checks."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple, ParamSpec, TypeVar

from prefect import Flow, flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency
from prefect.runtime import flow_run as current_run

from socialnet_ops.adapters.builds import check_version
from socialnet_ops.core.environments import Environment, environment_names, load_environment
from socialnet_ops.core.failures import RejectedError, before_any_change, changed_nothing, one_line
from socialnet_ops.core.gitflow import context_from_tags
from socialnet_ops.core.holds import Holds
from socialnet_ops.core.ledger import ReleaseManifest, release_manifest
from socialnet_ops.core.release import Build, SourceTree
from socialnet_ops.core.stack_locks import LOCK_MUTEX
from tasks.git import checkout_source
from tasks.gitlab import gitlab_status_hooks
from tasks.ledger import load_ledger
from tasks.platform import rendered_digest
from tasks.reporting import emit
from tasks.terraform import read_infra_state
from tasks.undo import ReleaseUndoneError

P = ParamSpec("P")
R = TypeVar("R")

# A release waits at most this long for another release of the same environment to finish.
SLOT_WAIT_SECONDS = 1800
# The holder renews its lease while it runs; a holder that died frees the slot within this time.
SLOT_LEASE_SECONDS = 60


def release_limit(environment: str) -> str:
    return f"release-{environment}"


def ensure_release_limits(environments: list[str] | None = None) -> list[str]:
    """Create the `release-<env>` limits (one slot each); deploys take them with strict=True.
    Also the `stack-locks` mutex, inside which merge requests' stack locks change."""
    names = [release_limit(name) for name in (environments or environment_names())]
    names.append(LOCK_MUTEX)
    with get_client(sync_client=True) as client:
        for name in names:
            client.upsert_global_concurrency_limit_by_name(name=name, limit=1)
    return names


@dataclass
class SlotHold:
    taken_at: float
    released_at: float | None = None


# A release flow holds its environments' slots for the whole release and its subflows (deploy,
# canary, rollback) run inside that hold instead of waiting for themselves.
_HELD_SLOTS = Holds("held_release_slots")


@contextmanager
def release_slot(environment: str) -> Iterator[SlotHold]:
    """One release per environment at a time; says when the slot was held."""
    logger = get_run_logger()
    if _HELD_SLOTS.holds(environment):
        logger.info("inside the release holding the %s slot", release_limit(environment))
        yield SlotHold(taken_at=time.time())
        return
    logger.info("waiting for the %s slot", release_limit(environment))
    with concurrency(
        release_limit(environment),
        occupy=1,
        strict=True,
        timeout_seconds=SLOT_WAIT_SECONDS,
        lease_duration=SLOT_LEASE_SECONDS,
    ):
        hold = SlotHold(taken_at=time.time())
        logger.info("holding the %s slot", release_limit(environment))
        try:
            with _HELD_SLOTS.holding(environment):
                yield hold
        finally:
            hold.released_at = time.time()


@contextmanager
def release_slots(environments: list[str]) -> Iterator[None]:
    """Several slots, always taken in name order so two releases never wait for each other."""
    with ExitStack() as stack:
        for environment in sorted(set(environments)):
            stack.enter_context(release_slot(environment))
        yield


# Per-release runtime settings travel as flow parameters, so they must never be secret.
_SECRET_LOOKING = ("PASSWORD", "SECRET", "TOKEN", "KEY")


def checked_release_settings(settings: dict[str, str] | None) -> dict[str, str]:
    """Non-secret `SOCIALNET_*` settings a build carries (fault drills, feature switches)."""
    checked = {}
    for key, value in (settings or {}).items():
        if not key.startswith("SOCIALNET_") or any(word in key for word in _SECRET_LOOKING):
            raise RejectedError(
                f"settings.{key}: only non-secret SOCIALNET_* settings may be given to a release; "
                "secrets come from Vault"
            )
        checked[key] = str(value)
    return checked


def announced_ref(ref: str | None) -> str | None:
    """The branch or tag GitLab announced `ref` (a sha) on, for a run a push or tag started."""
    context = context_from_tags(current_run.tags or [])
    if ref and context.get("sha") == ref and context.get("event") in {"push", "tag_push"}:
        return context.get("ref") or None
    return None


def checked_source(ref: str | None) -> SourceTree:
    """The tree the run reads, fetched and resolved before anything changes: a sha the remote
    does not have, or one force-pushed off the branch GitLab announced it on, is refused."""
    with before_any_change():
        return checkout_source(ref, on=announced_ref(ref))


class ReleaseInputs(NamedTuple):
    """What a deploy or canary checked before anything changes."""

    environment: Environment
    settings: dict[str, str]
    source: SourceTree


def checked_release_inputs(
    env: str, version: str, settings: dict[str, str] | None, ref: str | None
) -> ReleaseInputs:
    """The environment, version, runtime settings and source of a release, each validated
    before anything changes (an error names the file, key, setting or ref)."""
    with before_any_change():
        environment = checked_environment(env)
        check_version(version)
        return ReleaseInputs(environment, checked_release_settings(settings), checked_source(ref))


def manifest_of(
    environment: Environment, build: Build, secrets: dict[str, int], backup_id: str | None
) -> ReleaseManifest:
    """The release's manifest: its build's layers, what the platform rendered, the
    infrastructure applied, the secrets."""
    values_file = getattr(environment.platform, "values_file", None)
    return release_manifest(
        build.commit,
        build.source,
        build.digests,
        values_file,
        read_infra_state(environment.name),
        secrets,
        backup_id,
        rendered_digest(environment.name),
        build.images,
    )


def checked_environment(name: str) -> Environment:
    """Load and validate the environment before anything changes; errors name file and key."""
    with before_any_change():
        return load_environment(name)


class StepClock:
    """Wall time per named step, for the run's report."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, step: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.seconds[step] = round(time.monotonic() - started, 2)

    def rows(self) -> list[str]:
        return [f"{step}: {seconds} s" for step, seconds in self.seconds.items()]


def failure_of(state: Any) -> BaseException | None:
    """The exception a failed run ended with, when Prefect can give it back."""
    try:
        result = state.result(raise_on_failure=False)
    except Exception:  # a result that cannot be read: judge by the state's message alone
        return None
    return result if isinstance(result, BaseException) else None


ROLLBACK_LABEL = "socialnet.rollback"


def _has_recorded_release(environment: str) -> bool:

    try:
        return load_ledger(environment).stable is not None
    except Exception:  # unreadable ledger: no automation may act on a guess
        return False


def _rollback_wanted(environment: str, flow_run: Any) -> bool:
    """A failed release is rolled back only where the policy asks and something was recorded,
    and only once: a subflow (deploy or canary inside release) leaves it to its parent."""
    if getattr(flow_run, "parent_task_run_id", None) is not None:
        return False
    try:
        wanted = load_environment(environment).release.rollback_on_failure
    except Exception:  # an environment that does not load has nothing to roll back
        return False
    return wanted and _has_recorded_release(environment)


def announce_release_failure(flow: Any, flow_run: Any, state: Any) -> None:
    """on_failure hook: what the failure means, as the one event automations act on.

    - `socialnet.release.rejected`: it failed before changing anything; nothing reacts.
    - nothing more when the run's own undo hooks put everything back (`ReleaseUndoneError`):
      it emitted `socialnet.release.undone` itself.
    - `socialnet.rollback.failed` for a rollback's own failure: alerted, never rolled back, so a
      rollback can never start another.
    - `socialnet.release.failed` otherwise, labelled `socialnet.rollback: requested` only when
      the policy asks for it and the ledger records a release to return to; the rollback
      automation matches that label.
    """

    error = failure_of(state)
    parameters = flow_run.parameters
    environment = str(parameters.get("env", "unknown"))
    kind = "rollback" if flow.name == "rollback" else "release"
    details = {
        "flow": flow.name,
        "version": parameters.get("version"),
        "reason": one_line(error if error is not None else str(state.message or "")),
    }
    if changed_nothing(error, state.message):
        emit(f"{kind}.rejected", environment, **details)
        return
    if isinstance(error, ReleaseUndoneError) or (
        ReleaseUndoneError.__name__ in str(state.message or "")
    ):
        return
    if kind == "rollback":
        emit("rollback.failed", environment, **details)
        return
    rollback = _rollback_wanted(environment, flow_run)
    emit(
        "release.failed",
        environment,
        labels={ROLLBACK_LABEL: "requested" if rollback else "not-requested"},
        rollback=rollback,
        **details,
    )


def release_flow(
    name: str,
    flow_run_name: str,
    announce_failure: Callable[..., None] | None = None,
    on_end: Callable[..., None] | None = None,
) -> Callable[[Callable[P, R]], Flow[P, R]]:
    """`@flow` with the hooks every release flow has: its failure event, statuses to GitLab.

    `on_end` runs first when the run fails (a timeout included), crashes or is cancelled: what
    the run must not leave half done (the canary's abort). Prefect runs crash and cancellation
    hooks in the run's process (or its runner's); a SIGKILLed process runs none, so the next run
    of the environment does the same first."""

    gitlab = gitlab_status_hooks()
    first = [on_end] if on_end else []
    return flow(
        name=name,
        flow_run_name=flow_run_name,
        on_running=list(gitlab["on_running"]),
        on_completion=list(gitlab["on_completion"]),
        on_failure=[*first, announce_failure or announce_release_failure, *gitlab["on_failure"]],
        on_crashed=[*first, *gitlab["on_crashed"]],
        on_cancellation=[*first, *gitlab["on_cancellation"]],
    )
