"""Where the project's files and its local state live."""

from __future__ import annotations

import os
from pathlib import Path


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def environments_dir() -> Path:
    override = os.environ.get("SOCIALNET_ENVIRONMENTS_DIR")
    return Path(override) if override else repo_root() / "deployments" / "environments"


def state_root() -> Path:
    """`.local/` by default; tests point SOCIALNET_STATE_DIR at a temporary folder."""
    override = os.environ.get("SOCIALNET_STATE_DIR")
    return Path(override) if override else repo_root() / ".local"


def environment_state_dir(environment: str) -> Path:
    return state_root() / environment


def control_plane_dir() -> Path:
    """The local control plane's folder: its PostgreSQL, Redis, logs and 0600 secrets."""
    return state_root() / "control-plane"


def control_plane_backup_access() -> Path:
    """Where the control plane describes how its backups read Prefect's database (0600 JSON)."""
    return control_plane_dir() / "secrets" / "backup-access.json"
