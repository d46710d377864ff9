"""Every flow the CLI and the demo run, by its name: the one place control imports flows from.

Importing this module imports Prefect and every flow (seconds on 2 cores), so the CLI imports it
when a command runs a flow, not at start-up.
"""

from __future__ import annotations

from typing import Any

from prefect import Flow

from flows.backup import backup, backup_marker, base_backup, control_plane_backup
from flows.canary import canary
from flows.canary_control import canary_control
from flows.configure import configure
from flows.deploy import deploy
from flows.diff import diff
from flows.drift import drift
from flows.provision import provision
from flows.release import release
from flows.restore import pitr_drill, restore, restore_drill
from flows.rollback import rollback
from flows.secrets import rotate, secrets
from flows.technical import technical

FLOWS: dict[str, Flow[..., Any]] = {
    "backup": backup,
    "backup_marker": backup_marker,
    "base_backup": base_backup,
    "canary": canary,
    "control_plane_backup": control_plane_backup,
    "canary_control": canary_control,
    "configure": configure,
    "deploy": deploy,
    "diff": diff,
    "drift": drift,
    "provision": provision,
    "release": release,
    "pitr_drill": pitr_drill,
    "restore": restore,
    "restore_drill": restore_drill,
    "rollback": rollback,
    "rotate": rotate,
    "secrets": secrets,
    "technical": technical,
}
