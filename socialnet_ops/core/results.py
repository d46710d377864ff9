"""What flows return: one typed result per flow, which also says its report and its event.

A flow builds its result once; `tasks.reporting.publish` turns it into the run's markdown artifact
and its `socialnet.*` event, the CLI renders it (`summary()`, or JSON with --json), and tests read
its fields. Nothing is restated three times.
"""

from __future__ import annotations

import difflib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from socialnet_ops.core.ledger import ReleaseManifest


class Report(BaseModel):
    """A markdown artifact: its key, title and sections (a list renders as bullets)."""

    key: str
    title: str
    sections: dict[str, str | list[str]]


class Event(BaseModel):
    """`socialnet.<name>` about the environment, with its payload."""

    name: str
    payload: dict[str, Any]


class FlowResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    environment: str
    flow_run_id: str | None = None

    def report(self) -> Report | None:
        return None

    def event(self) -> Event | None:
        return None

    def summary(self) -> str:
        """One line for a person."""
        return f"{type(self).__name__} of {self.environment}"


class RetentionOutcome(BaseModel):
    model_config = ConfigDict(frozen=True)

    dry_run: bool
    kept: dict[str, list[str]] = Field(description="kept backup id -> why")
    deleted: list[str]
    deleted_wal: list[str] = Field(default_factory=list)

    def lines(self) -> list[str]:
        verb = "would delete" if self.dry_run else "deleted"
        lines = [f"{verb} {backup_id}" for backup_id in self.deleted]
        if self.deleted_wal:
            lines.append(f"{verb} {len(self.deleted_wal)} WAL segments")
        return lines or ["nothing to delete"]


FORWARD_ONLY = (
    "infrastructure (Terraform), node configuration (Ansible), secrets and the database schema "
    "stay as they are and converge forward with the next provision, configure or release"
)


def manifest_lines(manifest: ReleaseManifest | None) -> list[str]:
    if manifest is None:
        return ["none recorded"]
    return [f"{layer}: {what}" for layer, what in manifest.rows()]


def artifact_key(*parts: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    raw = "-".join(parts).lower()
    return "".join(char if char.isalnum() else "-" for char in raw).strip("-")


def timings(seconds: dict[str, float]) -> list[str]:
    return [f"{step}: {value} s" for step, value in seconds.items()]


class BackupResult(FlowResult):
    """A logical dump in the environment's bucket, and the retention that followed it."""

    backup_id: str
    trigger: str
    key: str
    bucket: str
    encryption: str
    database: str
    release: str | None
    schema_revision: str | None
    size_bytes: int
    sha256: str
    duration_s: float
    throughput_mib_s: float
    row_counts: dict[str, int]
    retention: RetentionOutcome
    ledger_updated: bool
    timings: list[str] = Field(default_factory=list)

    def report(self) -> Report:
        return Report(
            key=artifact_key("backup", self.environment),
            title=f"Backup {self.backup_id} of {self.environment}",
            sections={
                "object": f"s3://{self.bucket}/{self.key} (SSE {self.encryption})",
                "database": f"{self.database}, release {self.release or 'unknown'}, schema "
                f"revision {self.schema_revision or 'none'}",
                "size": f"{self.size_bytes} bytes ({self.size_bytes / 1048576:.1f} MiB)",
                "duration": f"{self.duration_s} s",
                "throughput": f"{self.throughput_mib_s} MiB/s",
                "sha256": self.sha256,
                "rows": [f"{table}: {count}" for table, count in self.row_counts.items()],
                "retention": self.retention.lines(),
                "ledger": "updated"
                if self.ledger_updated
                else "not updated (a release held the slot)",
                "timings": self.timings,
            },
        )

    def event(self) -> Event:
        return Event(
            name="backup.completed",
            payload={
                "backup_id": self.backup_id,
                "kind": "dump",
                "trigger": self.trigger,
                "key": self.key,
                "size_bytes": self.size_bytes,
                "sha256": self.sha256,
                "duration_s": self.duration_s,
                "release": self.release,
                "deleted": self.retention.deleted,
            },
        )

    def summary(self) -> str:
        return f"backed up {self.environment}: {self.backup_id} ({self.size_bytes} bytes)"


class PhysicalRetentionOutcome(BaseModel):
    model_config = ConfigDict(frozen=True)

    dry_run: bool
    kept: dict[str, str] = Field(description="kept full backup label -> why")
    expired: list[str] = Field(description="full backups expired, with what depends on them")

    def lines(self) -> list[str]:
        verb = "would expire" if self.dry_run else "expired"
        lines = [f"{verb} {label} (and what depends on it)" for label in self.expired]
        return lines + [f"kept {label}: {why}" for label, why in self.kept.items()]


class BaseBackupResult(FlowResult):
    """A physical backup by pgBackRest (full, differential or incremental), verified, copied to
    the second repository, then retention; point-in-time recovery starts at any such backup."""

    backup_label: str
    backup_type: str
    type_reason: str
    repositories: dict[str, str] = Field(description="repository -> its backup's label")
    started_at: str
    duration_s: float
    size_bytes: int
    stored_bytes: int
    wal_start: str
    wal_stop: str
    verified: bool
    archiving_problem: str | None
    retention: PhysicalRetentionOutcome

    def report(self) -> Report:
        return Report(
            key=artifact_key("base-backup", self.environment),
            title=f"Physical backup {self.backup_label} ({self.backup_type}) of {self.environment}",
            sections={
                "type": f"{self.backup_type}: {self.type_reason}",
                "repositories": [f"{repo}: {label}" for repo, label in self.repositories.items()],
                "size": f"{self.size_bytes} bytes of data, {self.stored_bytes} bytes stored "
                "(compressed, encrypted)",
                "duration": f"{self.duration_s} s",
                "WAL": f"{self.wal_start} .. {self.wal_stop}",
                "verified": "pgbackrest verify passed on every repository"
                if self.verified
                else "not verified",
                "archiving": self.archiving_problem or "healthy",
                "retention": self.retention.lines(),
            },
        )

    def event(self) -> Event:
        return Event(
            name="backup.completed",
            payload={
                "backup_id": self.backup_label,
                "kind": "physical",
                "type": self.backup_type,
                "size_bytes": self.size_bytes,
                "stored_bytes": self.stored_bytes,
                "duration_s": self.duration_s,
                "expired": self.retention.expired,
            },
        )

    def summary(self) -> str:
        return (
            f"base backup {self.environment}: {self.backup_label} ({self.backup_type}, "
            f"{self.size_bytes} bytes, {self.stored_bytes} stored, verified, copies: "
            f"{', '.join(self.repositories)})"
        )


class DeployResult(FlowResult):
    """A release rolled onto an environment's stable track."""

    version: str
    git_sha: str
    ref: str
    previous: str | None
    predeploy_backup: str
    migrations: list[str]
    seconds: dict[str, float]
    slot_taken_at: float
    slot_released_at: float | None
    source: str = ""
    manifest: ReleaseManifest | None = None

    def report(self) -> Report:
        return Report(
            key=artifact_key("deploy", self.environment),
            title=f"Deployed {self.version} to {self.environment}",
            sections={
                "version": f"{self.version} ({self.git_sha[:12]}, {self.ref})",
                "source": self.source or "-",
                "manifest": manifest_lines(self.manifest),
                "replaced": self.previous or "nothing (first release)",
                "pre-deploy backup": self.predeploy_backup,
                "migrations": self.migrations or ["none pending"],
                "timings": timings(self.seconds),
            },
        )

    def event(self) -> Event:
        return Event(
            name="release.deployed", payload={"version": self.version, "previous": self.previous}
        )

    def summary(self) -> str:
        return f"deployed {self.version} to {self.environment} (was {self.previous or 'nothing'})"


class RollbackResult(FlowResult):
    """An environment returned to an earlier release (`previous` is what served before)."""

    version: str
    previous: str | None
    reason: str
    seconds: dict[str, float]
    manifest: ReleaseManifest | None = None

    def returned(self) -> str:
        """What came back with the version, and what did not."""
        if self.manifest is None:
            return "the app of the build; chart and values of the control plane's tree"
        return (
            f"app {self.manifest.app}, chart {self.manifest.chart or '-'} and values "
            f"{self.manifest.values or '-'} of commit {(self.manifest.commit or 'working tree')[:12]}"
        )

    def report(self) -> Report:
        return Report(
            key=artifact_key("rollback", self.environment),
            title=f"Rolled {self.environment} back to {self.version}",
            sections={
                "from": self.previous or "nothing",
                "to": self.version,
                "returned": self.returned(),
                "not rolled back": FORWARD_ONLY,
                "manifest": manifest_lines(self.manifest),
                "reason": self.reason,
                "timings": timings(self.seconds),
            },
        )

    def event(self) -> Event:
        return Event(
            name="release.rolled_back",
            payload={"version": self.version, "previous": self.previous, "reason": self.reason},
        )

    def summary(self) -> str:
        return f"rolled back {self.environment} from {self.previous or 'nothing'} to {self.version}"


class VerifiedRestore(FlowResult):
    """A dump restored and verified: checksum, pg_restore's exit, schema revision, row counts."""

    backup_id: str
    size_bytes: int
    sha256: str
    schema_revision: str | None
    tables: int
    rows: int
    seconds: float

    def verification(self) -> str:
        return (
            f"sha256 {self.sha256}, pg_restore exit 0, schema revision "
            f"{self.schema_revision or 'none'}, {self.rows} rows in {self.tables} tables"
        )


class DumpRestoreResult(VerifiedRestore):
    """A dump restored into a database (a new one, or one it replaced)."""

    database: str
    replaced: bool
    previous_database_kept_as: str | None = None

    def report(self) -> Report:
        return Report(
            key=artifact_key("restore", self.environment),
            title=f"Backup {self.backup_id} restored into {self.database}",
            sections={
                "verified": self.verification(),
                "replaced": f"yes, previous kept as {self.previous_database_kept_as}"
                if self.replaced
                else "no (new database)",
                "duration": f"{self.seconds} s",
            },
        )

    def event(self) -> Event:
        return Event(
            name="restore.completed",
            payload={
                "mode": "dump",
                "backup_id": self.backup_id,
                "database": self.database,
                "replaced": self.replaced,
            },
        )

    def summary(self) -> str:
        return (
            f"restored {self.environment}: backup {self.backup_id} into {self.database}, "
            f"verified ({self.rows} rows in {self.tables} tables)"
        )


class PointInTimeRestoreResult(FlowResult):
    """The cluster as it was at the target, running on a private port of this machine."""

    target_kind: str
    target: str | None
    backup_label: str | None = None
    delta: bool
    recovery_stop: str | None
    host: str
    port: int
    data_dir: str
    log: str
    stop_with: str
    database: str
    restore_s: float
    recovery_s: float
    row_counts: dict[str, int]

    @property
    def target_text(self) -> str:
        return "the latest" if self.target_kind == "latest" else f"{self.target_kind} {self.target}"

    def report(self) -> Report:
        return Report(
            key=artifact_key("restore", self.environment),
            title=f"{self.environment} restored to {self.target_text}",
            sections={
                "restore": f"{'delta' if self.delta else 'full'} restore in {self.restore_s} s, "
                f"ready after {self.recovery_s} s",
                "stopped": self.recovery_stop or "at the end of the archived WAL",
                "server": f"{self.host}:{self.port} (data {self.data_dir})",
                "stop it with": self.stop_with,
                "rows": [f"{table}: {count}" for table, count in self.row_counts.items()],
            },
        )

    def event(self) -> Event:
        return Event(
            name="restore.completed",
            payload={
                "mode": "point-in-time",
                "target_kind": self.target_kind,
                "target": self.target,
                "port": self.port,
            },
        )

    def summary(self) -> str:
        return (
            f"restored {self.environment} to {self.target_text} "
            f"({'delta' if self.delta else 'full'} restore, ready in {self.recovery_s} s); "
            f"serving on {self.host}:{self.port}; stop it with: {self.stop_with}"
        )


class PitrDrillResult(FlowResult):
    """A random recorded moment of the window recovered into a scratch cluster and compared."""

    drill_id: str
    marker_time: str
    backup_label: str | None
    delta: bool
    rto_s: float
    rpo_s: float
    rto_objective_s: float
    rpo_objective_s: float
    newest_recoverable: str | None
    tables: int
    rows: int
    checksum: str
    verified_repositories: list[int]

    def report(self) -> Report:
        return Report(
            key=artifact_key("pitr-drill", self.environment),
            title=f"Point-in-time drill of {self.environment}: {self.marker_time} recovered and "
            "verified",
            sections={
                "recovered to": f"{self.marker_time} (a random recorded marker)",
                "matches": f"{self.rows} rows in {self.tables} tables, checksum {self.checksum}",
                "RTO": f"{self.rto_s} s (objective {self.rto_objective_s} s)",
                "RPO": f"{self.rpo_s} s; newest recoverable time {self.newest_recoverable} "
                f"(objective {self.rpo_objective_s} s)",
                "restore": "delta into the previous drill's cluster" if self.delta else "full",
                "verified": f"pgbackrest verify of repositories {self.verified_repositories}",
            },
        )

    def event(self) -> Event:
        return Event(
            name="backup.pitr_drill.completed",
            payload={"drill_id": self.drill_id, "rto_s": self.rto_s, "rpo_s": self.rpo_s},
        )

    def summary(self) -> str:
        return (
            f"point-in-time drill of {self.environment}: recovered to {self.marker_time}, "
            f"{self.rows} rows in {self.tables} tables match the marker; RTO {self.rto_s} s, "
            f"RPO {self.rpo_s} s"
        )


class MarkerResult(FlowResult):
    taken_at: str
    key: str
    tables: int
    rows: int
    checksum: str

    def summary(self) -> str:
        return (
            f"recovery marker of {self.environment} at {self.taken_at}: {self.rows} rows in "
            f"{self.tables} tables"
        )


class RestoreDrillResult(VerifiedRestore):
    """The latest backup restored into a scratch database, verified and dropped."""

    scratch_database: str

    def report(self) -> Report:
        return Report(
            key=artifact_key("restore-drill", self.environment),
            title=f"Restore drill of {self.environment}: backup {self.backup_id} verified",
            sections={
                "restored": f"{self.size_bytes} bytes into {self.scratch_database} (dropped) in "
                f"{self.seconds} s",
                "verified": self.verification(),
            },
        )

    def event(self) -> Event:
        return Event(
            name="backup.drill.completed",
            payload={"backup_id": self.backup_id, "seconds": self.seconds, "rows": self.rows},
        )

    def summary(self) -> str:
        return (
            f"restore drill of {self.environment}: backup {self.backup_id} verified "
            f"({self.rows} rows in {self.tables} tables)"
        )


class ProvisionResult(FlowResult):
    """A Terraform stack planned, and applied unless only a plan was asked for (the plan table is
    the run's `terraform-plan-<env>` artifact)."""

    status: Literal["clean", "changes"]
    plan: list[dict[str, str]] = Field(
        description="changing resources: address, action, attributes"
    )
    changes: dict[str, int] = Field(description="create/update/replace/delete -> count")
    outputs: dict[str, Any] | None = Field(
        default=None, description="the shared state stored as infra-<env>; None: only planned"
    )
    seconds: dict[str, float]

    def event(self) -> Event | None:
        if self.outputs is None:
            return None
        return Event(
            name="infra.applied",
            payload={
                "changes": self.changes,
                "nodes": len(self.outputs["nodes"]),
                "backup_bucket": self.outputs["backup_bucket"],
                "dns_zone": self.outputs["dns_zone"],
            },
        )

    def summary(self) -> str:
        counts = self.changes
        headline = (
            f" ({counts.get('create', 0)} to add, {counts.get('update', 0)} to change, "
            f"{counts.get('replace', 0)} to replace, {counts.get('delete', 0)} to destroy)"
            if self.status == "changes"
            else ""
        )
        done = "planned only, not applied" if self.outputs is None else "applied"
        return f"terraform: {self.status}{headline} on {self.environment}, {done}"


class StackDrift(BaseModel):
    model_config = ConfigDict(frozen=True)

    status: Literal["clean", "drifted", "locked", "not-provisioned"]
    addresses: list[str] = Field(default_factory=list)
    detail: str = ""
    seconds: float = 0.0


class DriftResult(FlowResult):
    """Stacks planned against reality (`environment` names them all); each drifted one also
    leaves its table artifact and `socialnet.infra.drift`."""

    stacks: dict[str, StackDrift]

    def summary(self) -> str:
        return "drift: " + "; ".join(
            f"{name} {stack.status}"
            + (f" ({len(stack.addresses)} address(es))" if stack.addresses else "")
            for name, stack in self.stacks.items()
        )


class ConfigureResult(FlowResult):
    """The nodes converged by Ansible (or only checked, a dry run): the recap row of each host."""

    check: bool
    hosts: dict[str, dict[str, Any]] = Field(
        description="host -> ok, changed, failed, unreachable, seconds, attempts, status"
    )
    changed: int
    seconds: dict[str, float]

    def event(self) -> Event:
        return Event(
            name="nodes.checked" if self.check else "nodes.configured",
            payload={
                "hosts": {host: row["status"] for host, row in self.hosts.items()},
                "changed": self.changed,
            },
        )

    def summary(self) -> str:
        verb = "checked (dry run)" if self.check else "configured"
        return f"{verb} {self.environment}: {len(self.hosts)} host(s), {self.changed} changed" + (
            f" ({', '.join(self.hosts)})" if self.hosts else ""
        )


class SecretsResult(FlowResult):
    """Vault bootstrapped and the secrets installed: names and actions, never a value."""

    layout: list[dict[str, str]] = Field(description="mount, policies, roles: item, action")
    secrets: list[dict[str, str]] = Field(description="each secret: item, action")
    installed: str = Field(description="where the platform keeps them")

    def event(self) -> Event:
        changes = len([row for row in self.secrets if row["action"] != "kept"])
        return Event(name="secrets.bootstrapped", payload={"changes": changes})

    def summary(self) -> str:
        changed = [row for row in self.secrets if row["action"] != "kept"]
        layout = [row for row in self.layout if row["action"] not in {"unchanged", "kept"}]
        return (
            f"secrets of {self.environment}: {len(changed)} changed, "
            f"{len(self.secrets) - len(changed)} kept, {len(layout)} layout change(s); "
            f"installed: {self.installed}"
        )


class RotateResult(FlowResult):
    """Secrets rotated under traffic: login roles and Vault versions, never a value."""

    database: dict[str, Any] | None = Field(
        default=None, description="the login rotation: from, to (roles), version, resumed"
    )
    revoked: list[str] = Field(default_factory=list)
    token_key: bool = Field(description="the signing key was rotated")
    end_overlap: bool
    overlap_seconds: float | None = None
    token_key_version: int | None = None
    seconds: dict[str, float]

    def token_key_outcome(self) -> str:
        if self.token_key:
            return (
                "rotated, previous key accepted until the overlap ends"
                if self.overlap_seconds is None
                else "rotated, overlap ended"
            )
        return "overlap ended" if self.end_overlap else "unchanged"

    def database_outcome(self) -> str:
        if self.database is None:
            return "unchanged"
        return (
            f"login {self.database['from']} -> {self.database['to']}, "
            f"revoked: {', '.join(self.revoked) or 'none'}"
        )

    def report(self) -> Report:
        return Report(
            key=artifact_key("rotate", self.environment),
            title=f"Rotated secrets of {self.environment}",
            sections={
                "database": self.database_outcome(),
                "token key": self.token_key_outcome(),
                "timings": timings(self.seconds),
            },
        )

    def event(self) -> Event:
        return Event(
            name="secrets.rotated",
            payload={
                "database": self.database is not None,
                "token_key": self.token_key,
                "end_overlap": self.end_overlap,
            },
        )

    def summary(self) -> str:
        return (
            f"rotated secrets of {self.environment} in {sum(self.seconds.values()):.0f} s: "
            f"database {self.database_outcome()}; token key {self.token_key_outcome()}"
        )


class CanaryResult(FlowResult):
    """A canary judged: promoted (every step passed) or aborted, where (`step`, `weight`) and why.

    An abort raises `CanaryAbortedError`, which carries this result."""

    version: str
    stable: str
    outcome: Literal["promoted", "aborted"]
    reason: str
    step: int | None = Field(description="the step that aborted it (None: promoted)")
    step_title: str | None
    weight: int
    measurements: int
    verdicts: dict[str, int] = Field(description="analysis outcome -> count")
    migrations: list[str]
    predeploy_backup: str
    seconds: dict[str, float]
    started_at: float
    ended_at: float
    slot_taken_at: float
    slot_released_at: float | None

    def report(self) -> Report | None:
        """The rollback report a person reads after an abort."""
        if self.outcome == "promoted":
            return None
        return Report(
            key=artifact_key("canary-rollback", self.environment),
            title=f"Canary {self.version} aborted on {self.environment}",
            sections={
                "why": self.reason,
                "where": f"{self.step_title} at {self.weight}% of traffic",
                "what serves": f"{self.stable} (stable, untouched), 100% of traffic",
                "what was done": [
                    "canary weight set to 0",
                    "canary replicas stopped",
                    "ledger unchanged: no release recorded",
                ],
                "measurements": [
                    f"{outcome}: {count}" for outcome, count in sorted(self.verdicts.items())
                ]
                or ["none"],
                "pre-deploy backup": self.predeploy_backup,
                "timings": timings(self.seconds),
            },
        )

    def event(self) -> Event:
        if self.outcome == "promoted":
            return Event(
                name="canary.promoted", payload={"version": self.version, "previous": self.stable}
            )
        return Event(
            name="canary.aborted",
            payload={
                "version": self.version,
                "stable": self.stable,
                "step": self.step_title,
                "weight": self.weight,
                "reason": self.reason[:300],
            },
        )

    def summary(self) -> str:
        return (
            f"{self.outcome}: {self.reason} (canary {self.version} on {self.environment}, "
            f"stable {self.stable})"
        )


# Which layer a path of the project belongs to, first match wins (the diff groups by it).
LAYERS = (
    ("migrations", "app/api/migrations/"),
    ("app", "app/"),
    ("chart", "infrastructure/helm/"),
    ("values", "deployments/values/"),
    ("terraform", "infrastructure/terraform/"),
    ("ansible", "infrastructure/ansible/"),
    ("policies", "infrastructure/policies/"),
)


def paths_by_layer(paths: list[str]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for path in paths:
        layer = next((name for name, prefix in LAYERS if path.startswith(prefix)), "other")
        grouped.setdefault(layer, []).append(path)
    return grouped


def text_diff(old: str | None, new: str | None, name: str) -> list[str]:
    """A unified diff of two versions of a file (None: it did not exist)."""
    return list(
        difflib.unified_diff(
            (old or "").splitlines(),
            (new or "").splitlines(),
            f"serving/{name}",
            f"commit/{name}",
            lineterm="",
        )
    )


class DiffResult(FlowResult):
    """What a release of `commit` would change where `serving_version` serves, in every layer."""

    ref: str
    commit: str
    serving_version: str | None
    serving_commit: str | None
    commits: list[str]
    changed: dict[str, list[str]]
    values_diff: list[str]
    chart: str
    migrations: list[str]
    secrets: list[str]
    terraform: str
    terraform_changes: list[dict[str, str]] = Field(default_factory=list)
    ansible: str

    def report(self) -> Report:
        serving = self.serving_version or "nothing"
        files = [f"{layer}: {', '.join(paths)}" for layer, paths in sorted(self.changed.items())]
        return Report(
            key=artifact_key("diff", self.environment),
            title=f"{self.environment}: {serving} -> {self.commit[:12]} ({self.ref})",
            sections={
                "commits": self.commits or ["none (the same commit, or unknown history)"],
                "files by layer": files or ["none"],
                "chart": self.chart,
                "values": ["```diff", *self.values_diff, "```"]
                if self.values_diff
                else "unchanged",
                "terraform": [
                    self.terraform,
                    *(f"{c['action']} {c['address']}" for c in self.terraform_changes),
                ],
                "ansible (check mode)": self.ansible,
                "pending migrations": self.migrations or ["none"],
                "secrets": self.secrets or ["no versions recorded"],
            },
        )

    def summary(self) -> str:
        return (
            f"{self.environment}: {self.serving_version or 'nothing'} -> {self.commit[:12]}: "
            f"{len(self.commits)} commit(s); {', '.join(sorted(self.changed)) or 'no files'} "
            f"changed; values {'changed' if self.values_diff else 'unchanged'}; "
            f"terraform {self.terraform}; ansible {self.ansible}; "
            f"{len(self.migrations)} migration(s) pending"
        )


class ReleaseResult(FlowResult):
    """The whole chain: one row per stage (the `release-<env>` table artifact is made as the
    stages run, and the flow emits `release.completed` itself)."""

    version: str
    source: str | None  # the promotion source environment, if any
    stages: dict[str, str]
    rows: list[dict[str, Any]]

    def summary(self) -> str:
        done = ", ".join(f"{stage}: {result}" for stage, result in self.stages.items())
        return f"released {self.version} to {self.environment} ({done})"


class ProbeResult(BaseModel):
    """Where a probe run ran: the host and address it saw, and its process."""

    model_config = ConfigDict(frozen=True)

    label: str
    host: str
    address: str
    pid: int

    def summary(self) -> str:
        return f"probe {self.label} ran on {self.host} ({self.address or 'no address'}), pid {self.pid}"
