"""release: one version through the whole lifecycle, from infrastructure to a verified production.

provision -> configure -> secrets -> deploy to the promotion source (staging) -> verify -> gate ->
canary to the target (production) -> verify -> backup, each stage one of the existing flows run as
a subflow, under the slots of both environments. Undo is transactional: when a stage fails, the
verified releases of earlier stages are rolled back (their `verify-release` task's on_rollback
hook), and the report lists what was undone. Infrastructure, node configuration and secrets are
kept: they are idempotent and the code that describes them is the record.

Reruns resume: a stage whose result is already there (the environment serves this exact build)
is reported as `already done` and skipped, so a rerun after a crash carries on where it stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.transactions import Transaction

from flows.backup import backup
from flows.canary import canary
from flows.common import (
    checked_environment,
    checked_release_settings,
    checked_source,
    release_flow,
    release_slots,
)
from flows.configure import configure
from flows.deploy import deploy
from flows.diff import diff
from flows.provision import provision
from flows.rollback import rollback
from flows.secrets import secrets
from socialnet_ops.adapters.builds import build_identity, check_version
from socialnet_ops.core.environments import Environment
from socialnet_ops.core.failures import RejectedError, before_any_change
from socialnet_ops.core.gitflow import promotion_refusal
from socialnet_ops.core.results import FlowResult, ReleaseResult
from tasks.health import smoke_test
from tasks.ledger import load_ledger
from tasks.physical_backups import backup_guard_problems, mark_restore_point
from tasks.postgres import resolve_backup_target
from tasks.reporting import artifact_key, emit, report_undo, table_report
from tasks.storage import ensure_bucket
from tasks.undo import UndoJournal, recalled, remember, undo_step, undoable, undone_failure


class PromotionRefusedError(Exception):
    """The build did not pass the promotion source; nothing reached the target."""


@dataclass
class StageRow:
    stage: str
    result: str
    seconds: float
    detail: str = ""


@dataclass
class ReleaseReport:
    """The table a person follows in the UI: one row per stage, then what was undone."""

    environment: str
    version: str
    rows: list[StageRow] = field(default_factory=list)

    def run(self, stage: str, action: Callable[[], Any], skip_reason: str | None = None) -> Any:
        if skip_reason is not None:
            self.rows.append(StageRow(stage, "skipped", 0.0, skip_reason))
            get_run_logger().info("%s: skipped, %s", stage, skip_reason)
            return None
        started = time.monotonic()
        try:
            outcome = action()
        except Exception as error:
            self._add(
                stage, "failed", started, str(error).splitlines()[0][:200] if str(error) else ""
            )
            raise
        self._add(stage, "ok", started, _describe(outcome))
        return outcome

    def _add(self, stage: str, result: str, started: float, detail: str) -> None:
        self.rows.append(StageRow(stage, result, round(time.monotonic() - started, 1), detail))
        self.publish()

    def publish(self, undone: list[str] | None = None) -> None:
        rows = [vars(row) for row in self.rows]
        rows += [
            {"stage": "undo", "result": entry, "seconds": "", "detail": ""}
            for entry in undone or []
        ]
        table_report(
            artifact_key("release", self.environment),
            rows,
            f"Release {self.version} to {self.environment}",
        )

    def results(self) -> dict[str, str]:
        return {row.stage: row.result for row in self.rows}


def _describe(outcome: Any) -> str:
    if isinstance(outcome, FlowResult):
        return outcome.summary()[:200]
    if not isinstance(outcome, dict):
        return ""
    if "outcome" in outcome:
        return f"{outcome['outcome']}: {outcome.get('reason', '')}"[:200]
    if "status" in outcome:
        return f"terraform: {outcome['status']}"
    if "changed" in outcome:
        return f"{len(outcome.get('hosts', {}))} host(s), {outcome['changed']} changed"
    if "already" in outcome:
        return str(outcome["already"])
    return ""


# --- the undo points ------------------------------------------------------------------------------


@task(name="verify-release", cache_policy=NO_CACHE)
def verify_release(environment: str, version: str, before: str | None) -> dict[str, int]:
    """The environment serves `version` through its edge; undoing the release returns to `before`."""
    remember(environment=environment, version=version, before=before)
    return smoke_test.fn(environment, version)


@verify_release.on_rollback
def roll_back_release(txn: Transaction) -> None:
    environment, version = recalled(txn, "environment"), recalled(txn, "version")
    before = recalled(txn, "before")
    if before is None:
        get_run_logger().warning(
            "%s served nothing before %s: left serving it", environment, version
        )
        return
    undo_step(
        f"{environment}: {version} rolled back to {before}",
        lambda: rollback(
            env=environment, version=before, reason=f"release of {version} undone by a later stage"
        ),
    )


@task(name="promotion-gate", cache_policy=NO_CACHE)
def promotion_gate(source: str, target: str, sha: str) -> str:
    """Only a build that passed the promotion source goes on; said before anything changes."""
    refusal = promotion_refusal(source, load_ledger(source), sha)
    if refusal is not None:
        raise PromotionRefusedError(f"{target} refuses the release: {refusal}")
    return f"{sha[:12]} passed {source}"


# --- the data's safety net -----------------------------------------------------------------------


class BackupGuardError(RejectedError):
    """The environment's data could not be got back if the release went wrong; nothing changed."""


def physical_backups_of(environment: Environment) -> bool:
    return environment.backup is not None and environment.is_local


def restore_point_before(environment: str, version: str) -> dict[str, str]:
    target = resolve_backup_target(environment)
    ensure_bucket(target.store)  # where the point is recorded (the emulator's: made here)
    point = mark_restore_point(target, f"release-{version}-{environment}")
    return {"already": f"restore point {point.name} at {point.lsn}"}


def guard_backups(
    report: ReleaseReport,
    environment: Environment,
    version: str,
    override: str | None,
    by: str | None,
) -> None:
    """Refuse to start while WAL archiving fails, or the last backup or drill is too old or
    failed; an override goes on, recorded with who and why."""
    policy = environment.backup.physical if environment.backup else None
    if policy is None or not policy.guard_releases:
        return
    name = environment.name
    problems = backup_guard_problems(resolve_backup_target(name), policy)
    if not problems:
        report.run(f"backup guard {name}", lambda: {"already": "backups, WAL and drills healthy"})
        return
    if not override:
        raise BackupGuardError(
            f"{name} refuses release {version}: {'; '.join(problems)} (override with "
            "override_backup_guard='<why>' and override_by='<who>')"
        )
    who = by or "unknown"
    emit("release.backup_guard.overridden", name, version=version, by=who, reason=override,
         problems=problems)  # fmt: skip
    report.run(
        f"backup guard {name}",
        lambda: {"already": f"overridden by {who}: {override} ({'; '.join(problems)})"},
    )


# --- the flow -------------------------------------------------------------------------------------


def _serving(environment: str) -> tuple[str | None, str | None]:
    """(version, git sha) of the release the environment's ledger records as serving."""
    stable = load_ledger(environment).stable
    return (stable.version, stable.git_sha) if stable else (None, None)


def _to_environment(
    environment: Environment,
    version: str,
    ref: str | None,
    settings: dict[str, str],
    allow_contracting_migrations: bool,
) -> dict[str, Any] | FlowResult:
    """The environment's own strategy: a canary when something serves to compare with."""
    serving, _ = _serving(environment.name)
    flow = canary if environment.release.progressive and serving is not None else deploy
    return flow(
        env=environment.name,
        version=version,
        ref=ref,
        settings=settings,
        allow_contracting_migrations=allow_contracting_migrations,
    )


@release_flow(name="release", flow_run_name="release-{env}-{version}")
def release(
    env: str,
    version: str,
    ref: str | None = None,
    settings: dict[str, str] | None = None,
    provision_infra: bool = True,
    configure_nodes: bool = True,
    take_backup: bool = True,
    allow_contracting_migrations: bool = False,
    override_backup_guard: str | None = None,
    override_by: str | None = None,
) -> ReleaseResult:
    """`env` is the target (production); its catalog's `promotion.source` (staging) goes first.

    `provision_infra`, `configure_nodes` and `take_backup` leave out a stage (said in the report).
    Where the policy guards releases (`backup.physical.guard_releases`), a release refuses to
    start while its data could not be got back; `override_backup_guard` (why) and `override_by`
    (who) start it anyway, recorded in the report and as an event.
    """
    with before_any_change():
        target = checked_environment(env)
        source = target.promotion.source if target.promotion else None
        check_version(version)
        runtime_settings = checked_release_settings(settings)
        tree = checked_source(ref)
    # Every stage releases the commit resolved now, even if the branch moves meanwhile.
    ref, sha = tree.sha, build_identity(tree)
    environments = [source, env] if source else [env]
    report = ReleaseReport(env, version)
    for name in environments:
        guard_backups(
            report, checked_environment(name), version, override_backup_guard, override_by
        )
    journal = UndoJournal()
    emit("release.started", env, version=version, source=source, git_sha=sha)
    with release_slots(environments):
        if ref is not None:  # the first artifact: what this commit changes where it goes
            report.run(f"diff {env}", lambda: diff(env=env, ref=ref, plan_infra=False,
                                                   check_nodes=False))  # fmt: skip
        try:
            with undoable(journal):
                # Infrastructure and nodes from the release's commit; secrets from Vault.
                for name in environments:
                    report.run(f"provision {name}", partial(provision, env=name, ref=ref),
                               None if provision_infra else "provision_infra=False")  # fmt: skip
                for name in environments:
                    report.run(f"configure {name}", partial(configure, env=name, ref=ref),
                               None if configure_nodes else "configure_nodes=False")  # fmt: skip
                for name in environments:
                    report.run(f"secrets {name}", partial(secrets, env=name))
                if source is not None:
                    release_stage(report, checked_environment(source), version, ref, sha,
                                  runtime_settings, allow_contracting_migrations)  # fmt: skip
                    report.run("promotion gate", lambda: promotion_gate(source, env, sha))
                release_stage(report, target, version, ref, sha, runtime_settings,
                              allow_contracting_migrations)  # fmt: skip
        except Exception as error:
            report.publish(journal.rows())
            report_undo(env, version, error, journal)
            raise undone_failure(error, journal) from error
    report.run(
        f"backup {env}",
        lambda: backup(env=env, trigger="manual", release=version),
        None if take_backup and target.backup else "no backup asked for or no backup policy",
    )
    report.publish()
    emit("release.completed", env, version=version, source=source, stages=report.results())
    return ReleaseResult(
        environment=env,
        flow_run_id=flow_run.get_id(),
        version=version,
        source=source,
        stages=report.results(),
        rows=[vars(row) for row in report.rows],
    )


def release_stage(
    report: ReleaseReport,
    environment: Environment,
    version: str,
    ref: str | None,
    sha: str,
    settings: dict[str, str],
    allow_contracting_migrations: bool,
) -> None:
    """Release to one environment and verify it; skipped when it already serves this build."""
    name = environment.name
    serving, serving_sha = _serving(name)
    strategy = (
        environment.release.strategy
        if environment.release.progressive and serving is not None
        else "deploy"
    )
    if serving == version and serving_sha == sha:
        report.run(f"release {name}", lambda: {"already": f"{name} already serves {version}"})
    else:
        # Where a recovery of this environment can stop if the release goes wrong.
        report.run(
            f"restore point {name}",
            lambda: restore_point_before(name, version),
            None if physical_backups_of(environment) else "no physical backups",
        )
        report.run(
            f"{strategy} {name}",
            lambda: _to_environment(
                environment, version, ref, settings, allow_contracting_migrations
            ),
        )
    # A rerun finds the version already serving: undoing it returns to the release before it.
    earlier = load_ledger(name).previous() if serving == version else None
    before = earlier.version if earlier else (None if serving == version else serving)
    report.run(f"verify {name}", lambda: verify_release(name, version, before))
