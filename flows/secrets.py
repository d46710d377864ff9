"""secrets: bootstrap an environment's Vault and hand the platform its secrets; rotate: new
database password and token signing key with no failed request.

Database password rotation ("dual login"): PostgreSQL gives a role one password, so the app logs
in as one of two roles, `socialnet_a` / `socialnet_b`, both members of the owner role `socialnet`
(sessions act as the owner). A rotation sets a new password on the role nobody uses, records it
in Vault, installs it, rolls the replicas onto it one by one (the old ones keep their still-valid
login until they are drained), then revokes the old role. Token signing key: the new key signs,
the old one is still accepted (`token_secret_previous`) until the overlap ends.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from flows.common import StepClock, checked_environment, release_slot
from socialnet_ops.core.results import RotateResult, SecretsResult
from socialnet_ops.core.secrets_catalog import IRREPLACEABLE, SECRET_NAMES
from socialnet_ops.platforms import platform_for
from tasks.reporting import artifact_key, publish, table_report
from tasks.vault import (
    bootstrap_vault_layout,
    create_missing_secrets,
    end_token_overlap,
    install_platform_secrets,
    restart_replicas,
    revoke_old_database_login,
    rotate_database_password,
    rotate_token_key,
    vault_preflight,
)


def checked_secret_names(names: list[str] | None) -> list[str]:
    unknown = sorted(set(names or []) - set(SECRET_NAMES))
    if unknown:
        raise ValueError(
            f"replace: unknown secrets {unknown}; the catalog has {', '.join(SECRET_NAMES)}"
        )
    kept_forever = sorted(set(names or []) & set(IRREPLACEABLE))
    if kept_forever:
        raise ValueError(
            f"replace: {', '.join(kept_forever)} is never replaced (a new value would make every "
            "existing backup unreadable)"
        )
    return sorted(set(names or []))


@flow(name="secrets", flow_run_name="secrets-{env}")
def secrets(env: str, replace: list[str] | None = None) -> SecretsResult:
    """Bootstrap Vault for `env` (mount, policies, AppRoles), create missing secrets (an existing
    value is replaced only when named in `replace`) and install them on the platform."""
    checked_environment(env)
    to_replace = checked_secret_names(replace)
    vault_preflight(env, "bootstrap")
    layout = bootstrap_vault_layout(env)
    vault_preflight(env, "secrets")
    values = create_missing_secrets(env, to_replace)
    installed = install_platform_secrets(env)
    table_report(
        artifact_key("secrets", env),
        [*layout, *values],
        f"Vault bootstrap of {env} (names and actions only, never values)",
    )
    return publish(
        SecretsResult(
            environment=env,
            flow_run_id=flow_run.get_id(),
            layout=layout,
            secrets=values,
            installed=installed["installed"],
        )
    )


@flow(name="rotate", flow_run_name="rotate-{env}")
def rotate(
    env: str,
    database: bool = True,
    token_key: bool = True,
    token_overlap_seconds: float | None = None,
    end_overlap: bool = False,
) -> RotateResult:
    """Rotate the database password and/or the token signing key of `env` under traffic.

    The previous token key stays accepted until `end_overlap=True` (a later run), or for
    `token_overlap_seconds` when given (this run waits, then drops it and rolls again).
    """
    environment = checked_environment(env)
    logger = get_run_logger()
    if not platform_for(environment).rotates_secrets:
        raise ValueError(
            f"rotate: environment {env} runs on {environment.platform.kind}; rotation is "
            "implemented for the local platform"
        )
    vault_preflight(env, "rotate")
    clock = StepClock()
    outcome: dict[str, Any] = {}
    with release_slot(env):
        with clock("vault"):
            if database:
                outcome["database"] = rotate_database_password(env)
            if token_key:
                outcome["token_key_version"] = rotate_token_key(env)
            elif end_overlap:
                outcome["token_key_version"] = end_token_overlap(env)
        if database or token_key or end_overlap:
            with clock("install"):
                install_platform_secrets(env, check=False)
            with clock("roll replicas"):
                restart_replicas(env)
        if database:
            with clock("revoke old login"):
                outcome["revoked"] = revoke_old_database_login(env)
        if token_key and token_overlap_seconds is not None:
            logger.info(
                "token key overlap: %.0f s before the previous key is dropped",
                token_overlap_seconds,
            )
            with clock("overlap"):
                time.sleep(token_overlap_seconds)
            with clock("end overlap"):
                outcome["token_key_version"] = end_token_overlap(env)
                install_platform_secrets(env, check=False)
                restart_replicas(env)
    return publish(
        RotateResult(
            environment=env,
            flow_run_id=flow_run.get_id(),
            token_key=token_key,
            end_overlap=end_overlap,
            overlap_seconds=token_overlap_seconds,
            seconds=clock.seconds,
            **outcome,
        )
    )
