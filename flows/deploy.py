"""deploy: build (or reuse) a release and roll it onto an environment's stable track."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from flows.common import StepClock, checked_environment, release_slot
from socialnet_ops.builds import check_version, source_identity
from socialnet_ops.ledger import ReleaseRecord
from tasks.git import build_release_task
from tasks.health import smoke_test
from tasks.ledger import read_ledger, record_release
from tasks.platform import roll_replicas
from tasks.postgres import check_migrations, migrate
from tasks.reporting import artifact_key, emit, markdown_report


def fault_settings(error_rate: float, latency_ms: int) -> dict[str, str]:
    """Fault injection baked into a build, for drills; empty for a normal release."""
    settings = {}
    if error_rate:
        settings["SOCIALNET_FAULT_ERROR_RATE"] = str(error_rate)
    if latency_ms:
        settings["SOCIALNET_FAULT_LATENCY_MS"] = str(latency_ms)
    return settings


@flow(name="deploy", flow_run_name="deploy-{env}-{version}")
def deploy(
    env: str,
    version: str,
    ref: str | None = None,
    fault_error_rate: float = 0.0,
    fault_latency_ms: int = 0,
    allow_contracting_migrations: bool = False,
) -> dict[str, Any]:
    environment = checked_environment(env)
    check_version(version)
    source_identity(ref)  # a bad ref fails here, before anything changes
    clock = StepClock()
    try:
        with release_slot(env) as slot_taken_at:
            previous = read_ledger(env).stable
            with clock("build"):
                build = build_release_task(
                    env, version, ref, fault_settings(fault_error_rate, fault_latency_ms)
                )
            with clock("migrations"):
                pending = check_migrations(
                    env,
                    version,
                    allow_contracting_migrations
                    or environment.release.allow_contracting_migrations,
                )
                migrate(env, version)
            with clock("replicas"):
                roll_replicas(env, version)
            with clock("smoke test"):
                smoke_test(env, version)
            record = ReleaseRecord(
                version=version,
                git_sha=build.git_sha,
                ref=build.ref,
                strategy="rolling",
                flow_run_id=flow_run.get_id(),
            )
            record_release(env, record)
    except Exception as error:
        emit(
            "release.failed",
            env,
            version=version,
            reason=str(error)[:300],
            rollback=environment.release.rollback_on_failure,
        )
        raise
    markdown_report(
        artifact_key("deploy", env),
        f"Deployed {version} to {env}",
        {
            "version": f"{version} ({build.git_sha[:12]}, {build.ref})",
            "replaced": previous.version if previous else "nothing (first release)",
            "migrations": pending or ["none pending"],
            "timings": clock.rows(),
        },
    )
    emit("release.deployed", env, version=version, previous=previous.version if previous else None)
    return {
        "environment": env,
        "version": version,
        "previous": previous.version if previous else None,
        "slot_taken_at": slot_taken_at,
        "flow_run_id": flow_run.get_id(),
        "seconds": clock.seconds,
    }
