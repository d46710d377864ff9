"""What `socialnet-ops status` reports: every environment and what runs in it."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from socialnet_ops.adapters.postgres import read_archiver_status
from socialnet_ops.control import control_plane
from socialnet_ops.control.control_plane import control_plane_status
from socialnet_ops.core.backups import DatabaseAccess
from socialnet_ops.core.environments import Environment, load_catalog
from socialnet_ops.core.paths import environment_state_dir
from socialnet_ops.platforms import platform_for
from tasks.ledger import load_drift, load_ledger
from webhooks.records import recent_notices


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

    platform = platform_for(environment)
    platform_status = platform.status()
    row["state"] = "running" if platform_status.running else "stopped"
    row["stable_version"] = platform_status.stable_version
    row["canary_version"] = platform_status.canary_version
    row["canary_weight"] = platform_status.canary_weight
    row["runtime"] = platform_status.runtime
    if platform_status.images:
        row["images"] = ", ".join(f"{k} {v}" for k, v in sorted(platform_status.images.items()))
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

    try:
        archiver = read_archiver_status(DatabaseAccess.from_socialnet_env(database_env))
    except Exception as error:
        return f"unknown: {error}"
    return (
        archiver["problem"]
        or f"ok, last {archiver['last_archived_wal']} at {archiver['last_archived_time']}"
    )


def age(timestamp: str | None, now: datetime | None = None) -> str:
    """`3 h 12 min ago` for an ISO timestamp; `never` when there is none."""
    if not timestamp:
        return "never"
    then = datetime.fromisoformat(timestamp)
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    seconds = max(0, int(((now or datetime.now(UTC)) - then).total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days} d {hours} h ago"
    if hours:
        return f"{hours} h {minutes} min ago"
    return f"{minutes} min ago" if minutes else f"{seconds} s ago"


def recorded_state(
    ledger: Any, drift: dict[str, Any] | None, now: datetime | None = None
) -> dict[str, str]:
    """What the control plane records of an environment: release, last backup, last drift check."""
    backup = ledger.last_backup or {}
    stable = ledger.stable
    manifest = stable.manifest if stable else None
    return {
        "recorded_release": f"{stable.version} ({stable.git_sha[:12]})" if stable else "none",
        "manifest": (
            "; ".join(f"{layer} {what}" for layer, what in manifest.rows() if what != "-")
            if manifest
            else "none recorded"
        ),
        "last_backup": (
            f"{backup['id']} ({backup.get('trigger', '?')}), {age(backup.get('finished_at'), now)}"
            if backup
            else "never"
        ),
        "drift": (
            f"{drift['status']} ({len(drift.get('addresses', []))} address(es)), "
            f"checked {age(drift.get('checked_at'), now)}"
            if drift
            else "never checked"
        ),
    }


def _with_records(rows: list[dict[str, Any]]) -> None:
    """Adds the ledger and drift records, read from the running control plane's Prefect server."""

    with control_plane.connected():
        for row in rows:
            try:
                row.update(recorded_state(load_ledger(row["name"]), load_drift(row["name"])))
            except Exception as error:  # status must show what it can
                row["records"] = f"unreadable: {str(error).splitlines()[0][:120]}"


def webhook_notices(newest: int = 5) -> list[str]:
    """The receiver's recent deliveries that started nothing for a reason a person should see
    (refused by the promotion gate, ignored for want of setup, invalid), one line each."""

    return [
        f"{notice.get('at', '?')} {notice.get('event') or '-'} {notice.get('status', '?')} "
        f"({notice.get('code', '?')}): {notice.get('reason', '')}"
        for notice in recent_notices(newest)
    ]


def collect_status() -> dict[str, Any]:
    catalog = load_catalog()
    report: dict[str, Any] = {"environments": [environment_status(env) for env in catalog.values()]}
    report["control_plane"] = control_plane_status()
    report["control_plane"]["webhook_notices"] = webhook_notices()
    if report["control_plane"].get("state") in {"running", "degraded"}:
        _with_records(report["environments"])
    return report
