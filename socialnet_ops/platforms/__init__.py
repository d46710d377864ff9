"""Platforms: one interface (`base.Platform`), a local and a Kubernetes implementation."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from socialnet_ops.adapters import vault
from socialnet_ops.core.backups import BackupError, BackupTarget, DatabaseAccess, ObjectStore
from socialnet_ops.core.environments import Environment
from socialnet_ops.core.failures import one_line
from socialnet_ops.core.paths import control_plane_backup_access
from socialnet_ops.platforms.base import Platform, PlatformError

if TYPE_CHECKING:
    from socialnet_ops.platforms.local import LocalPlatform


def platform_for(environment: Environment) -> Platform:
    """The platform an environment runs on.

    Each implementation is imported here, when asked for: it pulls its own tools (the Kubernetes
    client, supervisor), and both import `platforms.base`, which runs this package first.
    """
    kind = environment.platform.kind
    if kind == "local":
        from socialnet_ops.platforms.local import LocalPlatform

        return LocalPlatform(environment)
    if kind == "kubernetes":
        from socialnet_ops.platforms.kubernetes import KubernetesPlatform

        return KubernetesPlatform(environment)
    raise PlatformError(f"environment {environment.name!r}: unknown platform kind {kind!r}")


def backup_target_for(environment: Environment) -> BackupTarget:
    """The database and bucket of an environment, from its platform and its backup policy."""
    store = backup_store_for(environment)
    platform = platform_for(environment)
    assert environment.backup is not None  # backup_store_for refused an environment without one
    return BackupTarget(
        environment=environment.name,
        database=DatabaseAccess.from_socialnet_env(platform.database_env()),
        store=store,
        database_label=environment.backup.database,
        engine=platform.backup_engine(),
        metrics_url=platform.endpoints().extra.get("pushgateway_url"),
    )


def backup_store_for(environment: Environment) -> ObjectStore:
    """The bucket of an environment's backups (the local platform's emulator for `local`)."""
    if environment.backup is None:
        raise BackupError(
            f"deployments/environments/{environment.name}.yaml: backup: the environment has no "
            "backup policy; add one (schedule, bucket, retention) to back it up"
        )
    endpoint = environment.cloud.endpoint
    if endpoint == "local":
        endpoint = platform_for(environment).endpoints().extra.get("aws_endpoint_url")
        if not endpoint:
            raise BackupError(f"the {environment.name} platform exposes no AWS emulator endpoint")
    return ObjectStore(
        bucket=environment.backup.bucket,
        region=environment.cloud.region,
        endpoint_url=endpoint or os.environ.get("AWS_ENDPOINT_URL") or None,
        create_bucket=environment.cloud.endpoint == "local",
    )


CONTROL_PLANE = "control-plane"


def control_plane_backup_target(environment: Environment) -> BackupTarget:
    """The control plane's own database (flow runs, deployments, the ledgers), kept in the
    bucket of `environment`'s backups under `backups/control-plane/prefect/`.

    Only the control plane's machine can take it: `make up` writes the read-only role's access
    file there (0600); a worker elsewhere gets a one-line error instead.
    """
    access_file = control_plane_backup_access()
    try:
        access = DatabaseAccess.model_validate(json.loads(access_file.read_text()))
    except FileNotFoundError:
        raise BackupError(
            f"{access_file} is missing: the control plane's database is backed up from the control "
            "plane's machine after `make up` (run the flow on its work queue)"
        ) from None
    except (OSError, ValueError) as error:
        raise BackupError(f"{access_file}: cannot read it: {one_line(error)}") from None
    store = backup_store_for(environment)
    return BackupTarget(
        environment=CONTROL_PLANE, database=access, store=store, database_label="prefect"
    )


# --- where an environment's Vault is (the local platform runs its own OpenBao) ---------------------


def _local(environment: Environment) -> LocalPlatform:
    from socialnet_ops.platforms.local import LocalPlatform

    return LocalPlatform(environment)


def vault_address(environment: Environment) -> str:
    """`vault.address`, where `local` is the local platform's OpenBao (its port in state.json)."""
    if environment.vault.address != "local":
        return environment.vault.address.rstrip("/")
    try:
        return _local(environment).vault_address
    except Exception as error:
        raise vault.VaultUnavailableError(
            f"environment {environment.name}: vault.address is `local` but the local platform "
            f"has no OpenBao yet ({error}); start it with `socialnet-ops up`"
        ) from None


def vault_secret_id_file(environment: Environment) -> Path | None:
    """`vault.auth.secret_id_file`, or the local platform's `.local/<env>/secrets/vault-secret-id`."""
    if environment.vault.auth.secret_id_file:
        return Path(environment.vault.auth.secret_id_file)
    return platform_for(environment).vault_secret_id_files().get("flows")


def vault_admin_token_file(environment: Environment) -> Path | None:
    """The local dev server's root token (the local bootstrap's only credential)."""
    if not (environment.is_local and environment.vault.address == "local"):
        return None
    return _local(environment).vault_token_file
