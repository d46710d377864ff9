"""What `socialnet-ops status` reports: every environment and what runs in it."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from socialnet_ops.control_plane import control_plane_status
from socialnet_ops.environments import Environment, load_catalog
from socialnet_ops.paths import environment_state_dir


def environment_status(environment: Environment) -> dict[str, Any]:
    row: dict[str, Any] = {
        "name": environment.name,
        "platform": environment.platform.kind,
        "domain": environment.domain,
        "strategy": environment.release.strategy,
    }
    if not environment.is_local:
        row["state"] = f"cluster context {getattr(environment.platform, 'context', '?')}"
        return row
    if not environment_state_dir(environment.name).exists():
        row["state"] = "not started"
        return row
    from socialnet_ops.platforms import platform_for

    platform = platform_for(environment)
    platform_status = platform.status()
    row["state"] = "running" if platform_status.running else "stopped"
    row["stable_version"] = platform_status.stable_version
    row["canary_version"] = platform_status.canary_version
    row["canary_weight"] = platform_status.canary_weight
    row["programs"] = [asdict(program) for program in platform_status.programs]
    if platform_status.running and environment.backup is not None:
        row["wal_archiving"] = wal_archiving(platform.database_env())
    if platform_status.endpoints and platform_status.running:
        row["urls"] = {
            "app": platform_status.endpoints.edge_url,
            "prometheus": platform_status.endpoints.prometheus_url,
        }
    return row


def wal_archiving(database_env: dict[str, str]) -> str:
    """`ok, last <segment> at <time>`, or why WAL is not being archived."""
    from socialnet_ops.backups import DatabaseAccess, read_archiver_status

    try:
        archiver = read_archiver_status(DatabaseAccess.from_socialnet_env(database_env))
    except Exception as error:
        return f"unknown: {error}"
    return (
        archiver["problem"]
        or f"ok, last {archiver['last_archived_wal']} at {archiver['last_archived_time']}"
    )


def collect_status() -> dict[str, Any]:
    catalog = load_catalog()
    report: dict[str, Any] = {"environments": [environment_status(env) for env in catalog.values()]}
    report["control_plane"] = control_plane_status()
    return report
