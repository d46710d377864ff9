"""deploy: build (or reuse) a release and roll it onto an environment's stable track."""

from __future__ import annotations

from prefect.runtime import flow_run

from flows.canary import settle_interrupted_canary
from flows.common import (
    StepClock,
    checked_release_inputs,
    manifest_of,
    release_flow,
    release_slot,
)
from socialnet_ops.core.backups import backup_id, backup_name
from socialnet_ops.core.failures import before_any_change
from socialnet_ops.core.results import DeployResult
from tasks.git import build_release_task
from tasks.health import smoke_test
from tasks.ledger import read_ledger, record_release
from tasks.platform import note_serving_release, roll_replicas
from tasks.postgres import check_migrations, migrate, take_predeploy_backup
from tasks.reporting import publish, report_undo
from tasks.undo import UndoJournal, undoable, undone_failure
from tasks.vault import materialize_secrets, read_secret_versions


@release_flow(name="deploy", flow_run_name="deploy-{env}-{version}")
def deploy(
    env: str,
    version: str,
    ref: str | None = None,
    settings: dict[str, str] | None = None,
    allow_contracting_migrations: bool = False,
) -> DeployResult:
    environment, runtime_settings, source = checked_release_inputs(env, version, settings, ref)
    clock = StepClock()
    with release_slot(env) as slot:
        settle_interrupted_canary(env, version)
        # A build that fails, or migrations the policy refuses, change nothing: rejected.
        with before_any_change():
            previous = read_ledger(env).stable
            with clock("build"):
                build = build_release_task(env, version, source, runtime_settings)
            materialize_secrets(env)  # Vault's values, again: before migrations and replicas
            secret_versions = read_secret_versions(env)
            pending = check_migrations(
                env,
                version,
                allow_contracting_migrations or environment.release.allow_contracting_migrations,
            )
        journal = UndoJournal()
        try:
            # A failed migration restores the pre-deploy backup; failed replicas return to the
            # release that served. The database stays migrated once replicas roll: migrations
            # are expand-only, so the release before runs on the new schema.
            with undoable(journal):
                with clock("pre-deploy backup"):
                    backup = take_predeploy_backup(env, version) if environment.backup else None
                with clock("migrations"):
                    migrate(env, version)
            with undoable(journal):
                note_serving_release(env)
                with clock("replicas"):
                    roll_replicas(env, version)
                with clock("smoke test"):
                    smoke_test(env, version)
        except Exception as error:
            report_undo(env, version, error, journal)
            raise undone_failure(error, journal) from error
        manifest = manifest_of(environment, build, secret_versions, backup_id(backup))
        record_release(env, build, "rolling", manifest)
    return publish(
        DeployResult(
            environment=env,
            flow_run_id=flow_run.get_id(),
            version=version,
            git_sha=build.git_sha,
            ref=build.ref,
            previous=previous.version if previous else None,
            predeploy_backup=backup_name(backup),
            source=source.describe(),
            manifest=manifest,
            migrations=pending,
            seconds=clock.seconds,
            slot_taken_at=slot.taken_at,
            slot_released_at=slot.released_at,
        )
    )
