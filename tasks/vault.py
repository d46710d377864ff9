"""Vault tasks: preflight, bootstrap, missing secrets, injection into the platform, rotation.

Sessions and secret values are made inside the tasks, never passed as parameters or returned:
what a task returns (and Prefect may persist) names paths, versions and login roles only.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Literal, cast

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from socialnet_ops.adapters import vault
from socialnet_ops.core.environments import Environment, load_environment
from socialnet_ops.core.secrets_catalog import SECRET_NAMES
from socialnet_ops.platforms import (
    platform_for,
    vault_address,
    vault_admin_token_file,
    vault_secret_id_file,
)

ADMIN_TOKEN_FILE_VARIABLE = "SOCIALNET_VAULT_ADMIN_TOKEN_FILE"  # noqa: S105 - a variable name
Purpose = Literal["bootstrap", "secrets", "deploy", "rotate"]

# One session per Vault identity and process: a worker renews or replaces its token as it goes.
_sessions: dict[tuple[str, str], vault.VaultSession] = {}
_sessions_lock = threading.Lock()


def secret_block_value(name: str) -> str | None:
    """The value of the Prefect Secret block `name`, or None when there is no such block."""
    from prefect.blocks.system import Secret

    try:
        block = cast(Secret, Secret.load(name))
    except ValueError:
        return None
    return str(block.get())


def _secret_id_reader(environment: Environment) -> Any:
    path = vault_secret_id_file(environment)
    block = f"vault-secret-id-{environment.name}"

    def read() -> str:
        if path is not None and path.exists():
            return vault.read_token_file(path, "AppRole secret id")
        value = secret_block_value(block)
        if not value:
            where = f"{path} or " if path else ""
            raise vault.VaultPermissionError(
                f"environment {environment.name}: no AppRole secret id for role "
                f"{environment.vault.auth.role} (looked in {where}the Prefect Secret block {block})"
            )
        return value

    return read


def flows_session(environment: Environment) -> vault.VaultSession:
    """The flows' identity on the environment's Vault (AppRole, or a token for `method: token`)."""
    address = vault_address(environment)
    auth = environment.vault.auth
    key = (address, f"{auth.method}:{auth.role}")
    with _sessions_lock:
        session = _sessions.get(key)
        if session is None:
            login: vault.Login
            if auth.method == "approle":
                login = vault.AppRoleLogin(auth.role, _secret_id_reader(environment))
            else:
                login = vault.TokenLogin(
                    _secret_id_reader(environment), name=f"token of {auth.role}"
                )
            session = vault.VaultSession(address, login)
            _sessions[key] = session
        return session


def admin_session(environment: Environment) -> vault.VaultSession | None:
    """Who may create the mount, policies and roles: the local dev root token, or the token file an
    operator names at run time (SOCIALNET_VAULT_ADMIN_TOKEN_FILE). Never a Prefect block: whoever
    could read the control plane's blocks would hold every environment's Vault."""
    address = vault_address(environment)
    local = vault_admin_token_file(environment)
    if local is not None:
        return vault.VaultSession(
            address,
            vault.TokenLogin(
                lambda: vault.read_token_file(local, "OpenBao root token"), "the dev root token"
            ),
        )
    configured = os.environ.get(ADMIN_TOKEN_FILE_VARIABLE)
    if configured:
        path = Path(configured)
        return vault.VaultSession(
            address,
            vault.TokenLogin(lambda: vault.read_token_file(path, "admin token"), "admin token"),
        )
    return None


_NEEDS: dict[str, dict[str, tuple[str, ...]]] = {
    "secrets": {name: ("create", "read", "update") for name in SECRET_NAMES},
    "deploy": {"database": ("read",), "api": ("read",)},
    "rotate": {"database": ("read", "update"), "api": ("read", "update")},
}
_MUST_EXIST = {"deploy": ("database", "api"), "rotate": ("database", "api")}


@task(name="vault-preflight", cache_policy=NO_CACHE)
def vault_preflight(environment: str, purpose: Purpose) -> list[str]:
    """Vault reachable, unsealed, token valid, policy grants what `purpose` needs, secrets exist;
    else stop here, before anything changes, with a message naming the path."""
    logger = get_run_logger()
    settings = load_environment(environment)
    if purpose == "bootstrap":
        admin = admin_session(settings)
        if admin is None:
            checked = [f"no admin credentials for {environment}: the layout is left as it is"]
            checked += vault.preflight(
                flows_session(settings),
                mount=settings.vault.mount,
                environment=environment,
                needs={},
            )
        else:
            checked = vault.preflight(
                admin, mount=settings.vault.mount, environment=environment, needs={}
            )
    else:
        checked = vault.preflight(
            flows_session(settings),
            mount=settings.vault.mount,
            environment=environment,
            needs=_NEEDS[purpose],
            must_exist=_MUST_EXIST.get(purpose, ()),
        )
    for line in checked:
        logger.info("preflight: %s", line)
    return checked


@task(name="bootstrap-vault-layout", cache_policy=NO_CACHE)
def bootstrap_vault_layout(environment: str) -> list[dict[str, str]]:
    """KV v2 mount, policies flows/api/webhooks-<env> and their AppRole roles (idempotent)."""
    logger = get_run_logger()
    settings = load_environment(environment)
    admin = admin_session(settings)
    if admin is None:
        logger.info(
            "no admin credentials (%s is not set): the layout is not managed by this run",
            ADMIN_TOKEN_FILE_VARIABLE,
        )
        return []
    changes = vault.ensure_layout(
        admin,
        environment=environment,
        mount=settings.vault.mount,
        flows_role=settings.vault.auth.role,
    )
    changes += vault.ensure_secret_id_files(
        admin,
        environment=environment,
        flows_role=settings.vault.auth.role,
        files=platform_for(settings).vault_secret_id_files(),
    )
    for change in changes:
        logger.info("%s: %s", change.what, change.action)
    return [change.row() for change in changes]


@task(name="create-missing-secrets", cache_policy=NO_CACHE)
def create_missing_secrets(environment: str, replace: list[str]) -> list[dict[str, str]]:
    """Strong random values for every missing secret; existing ones kept unless in `replace`."""
    logger = get_run_logger()
    settings = load_environment(environment)
    changes = vault.ensure_secrets(
        flows_session(settings),
        mount=settings.vault.mount,
        environment=environment,
        replace=replace,
        recover=platform_for(settings).installed_secret,
    )
    for change in changes:
        logger.info("%s: %s", change.what, change.action)
    return [change.row() for change in changes]


@task(name="install-platform-secrets", cache_policy=NO_CACHE)
def install_platform_secrets(environment: str, check: bool = True) -> dict[str, Any]:
    """Read the environment's secrets from Vault and hand them to its platform (local: 0600
    files and the database login; Kubernetes: the Secret the chart mounts). The values go from
    Vault to the platform inside this task: no parameter, result or log line carries them."""
    logger = get_run_logger()
    settings = load_environment(environment)
    if check:
        vault_preflight.fn(environment, "deploy")
    session = flows_session(settings)
    secrets = vault.read_runtime_secrets(session, settings.vault.mount, environment)
    where = platform_for(settings).install_secrets(secrets, progress=logger.info)
    logger.info("secrets of %s installed: %s", environment, where)
    return {"environment": environment, "installed": where, "secrets": sorted(SECRET_NAMES)}


@task(name="materialize-secrets", cache_policy=NO_CACHE)
def materialize_secrets(environment: str) -> str:
    """The deploy flow's step: the platform gets its secrets before replicas roll, unless its
    replicas read standing ones (Kubernetes: the Secret the secrets and rotate flows write, which
    the chart mounts, so a deploy has nothing to hand over)."""
    standing = platform_for(load_environment(environment)).standing_secrets(
        progress=get_run_logger().info
    )
    if standing is not None:
        return standing
    return str(install_platform_secrets.fn(environment)["installed"])


@task(name="read-secret-versions", cache_policy=NO_CACHE)
def read_secret_versions(environment: str) -> dict[str, int]:
    """The Vault KV version of each of the environment's secrets, for the release manifest.

    Best effort: the versions describe a release, they do not gate it (on Kubernetes a deploy
    needs no Vault access: the Secret was written by the secrets flow)."""
    settings = load_environment(environment)
    try:
        return vault.secret_versions(
            flows_session(settings), settings.vault.mount, environment, SECRET_NAMES
        )
    except (vault.VaultPermissionError, vault.VaultUnavailableError) as error:
        get_run_logger().warning("secret versions of %s not recorded: %s", environment, error)
        return {}


# --- rotation ------------------------------------------------------------------------------------


@task(name="rotate-database-password", cache_policy=NO_CACHE)
def rotate_database_password(environment: str) -> dict[str, Any]:
    """A new password in Vault for the other login role (the serving one stays valid)."""
    settings = load_environment(environment)
    rotation = vault.rotate_database_secret(
        flows_session(settings), settings.vault.mount, environment
    )
    get_run_logger().info(
        "database login %s -> %s (Vault version %d%s)",
        rotation.from_user,
        rotation.to_user,
        rotation.version,
        ", resuming an interrupted rotation" if rotation.resumed else "",
    )
    return {
        "from": rotation.from_user,
        "to": rotation.to_user,
        "version": rotation.version,
        "resumed": rotation.resumed,
    }


@task(name="rotate-token-key", cache_policy=NO_CACHE)
def rotate_token_key(environment: str) -> int:
    """A new signing key; the current one stays accepted as the previous key (overlap)."""
    settings = load_environment(environment)
    version = vault.rotate_token_key(flows_session(settings), settings.vault.mount, environment)
    get_run_logger().info("token signing key rotated (Vault version %d), overlap begins", version)
    return version


@task(name="end-token-overlap", cache_policy=NO_CACHE)
def end_token_overlap(environment: str) -> int | None:
    """Drop the previous signing key: tokens it signed stop working."""
    settings = load_environment(environment)
    version = vault.end_token_overlap(flows_session(settings), settings.vault.mount, environment)
    get_run_logger().info(
        "previous token key dropped (Vault version %s)"
        if version
        else "no previous token key to drop (%s)",
        version,
    )
    return version


@task(name="restart-replicas", cache_policy=NO_CACHE)
def restart_replicas(environment: str) -> None:
    """Fresh replicas, one at a time behind the edge: they read the new secrets at start."""
    platform_for(load_environment(environment)).restart_replicas(progress=get_run_logger().info)


@task(name="revoke-old-database-login", cache_policy=NO_CACHE)
def revoke_old_database_login(environment: str) -> list[str]:
    """Once no replica uses it, the previous login role loses its password and sessions."""
    settings = load_environment(environment)
    revoked = platform_for(settings).revoke_database_logins(progress=get_run_logger().info)
    vault.finish_database_rotation(flows_session(settings), settings.vault.mount, environment)
    return revoked
