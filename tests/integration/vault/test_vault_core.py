"""Bootstrap, policies, sessions and failures against a real OpenBao server with real hvac."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from socialnet_ops.adapters import vault
from socialnet_ops.core.secrets_catalog import SECRET_NAMES, secret_path
from tests.integration.vault.conftest import OpenBao, start_openbao, stop_openbao

pytestmark = pytest.mark.integration

MOUNT = "socialnet"


def bootstrap(server: OpenBao, environment: str, folder: Path) -> list[vault.Change]:
    return vault.bootstrap_environment(
        server.admin(),
        environment=environment,
        mount=MOUNT,
        flows_role=f"flows-{environment}",
        secret_id_files={c: folder / f"{c}-{environment}" for c in ("flows", "api", "webhooks")},
    )


def session_of(
    server: OpenBao, consumer: str, environment: str, folder: Path
) -> vault.VaultSession:
    path = folder / f"{consumer}-{environment}"
    return vault.VaultSession(
        server.address,
        vault.AppRoleLogin(f"{consumer}-{environment}", lambda: path.read_text().strip()),
    )


def versions(server: OpenBao, environment: str) -> dict[str, int]:
    admin = server.admin()
    found = {}
    for name in SECRET_NAMES:
        current = vault.read_secret(admin, MOUNT, secret_path(environment, name))
        assert current is not None
        found[name] = current.version
    return found


def test_bootstrap_is_idempotent(openbao: OpenBao, tmp_path: Path) -> None:
    first = bootstrap(openbao, "local", tmp_path)
    assert {c.action for c in first if c.what.startswith(f"{MOUNT}/")} == {"created"}
    before = versions(openbao, "local")
    ids = {p.name: p.read_text() for p in tmp_path.iterdir()}
    assert all(oct(p.stat().st_mode & 0o777) == "0o600" for p in tmp_path.iterdir())

    second = bootstrap(openbao, "local", tmp_path)

    assert {c.action for c in second} <= {"unchanged", "kept"}, second
    assert versions(openbao, "local") == before
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == ids


def test_an_existing_value_is_replaced_only_when_asked(openbao: OpenBao, tmp_path: Path) -> None:
    bootstrap(openbao, "local", tmp_path)
    admin = openbao.admin()
    before = vault.read_secret(admin, MOUNT, "local/api")
    assert before is not None
    kept = vault.ensure_secrets(admin, mount=MOUNT, environment="local")
    assert {c.action for c in kept} == {"kept"}
    changes = vault.ensure_secrets(admin, mount=MOUNT, environment="local", replace=["api"])
    after = vault.read_secret(admin, MOUNT, "local/api")
    assert after is not None and after.version == before.version + 1
    assert after.data["token_secret"] != before.data["token_secret"]
    assert {c.what: c.action for c in changes}[f"{MOUNT}/local/api"] == "replaced"


def test_policies_deny_other_environments_and_other_consumers(
    openbao: OpenBao, tmp_path: Path
) -> None:
    bootstrap(openbao, "local", tmp_path)
    bootstrap(openbao, "staging", tmp_path)
    flows = session_of(openbao, "flows", "local", tmp_path)
    api = session_of(openbao, "api", "local", tmp_path)
    webhooks = session_of(openbao, "webhooks", "local", tmp_path)

    # Each consumer reads what it needs in its own environment...
    assert vault.read_secret(flows, MOUNT, "local/webhooks") is not None
    assert (
        vault.read_runtime_secrets(api, MOUNT, "local", with_webhooks=False).db_user
        == "socialnet_a"
    )
    assert vault.read_secret(webhooks, MOUNT, "local/webhooks") is not None
    # ... and nothing of another environment, nor another consumer's secrets, nor any write.
    denied = [
        (flows, "read", "staging/database"),
        (flows, "write", "staging/api"),
        (api, "read", "staging/api"),
        (api, "read", "local/webhooks"),
        (api, "write", "local/api"),
        (webhooks, "read", "local/database"),
        (webhooks, "read", "staging/webhooks"),
    ]
    for session, action, path in denied:
        with pytest.raises(vault.VaultPermissionError, match=f"{MOUNT}/data/{path}"):
            if action == "read":
                vault.read_secret(session, MOUNT, path)
            else:
                vault.write_secret(session, MOUNT, path, {"token_secret": "x"}, cas=None)
    # The preflight says the same before a flow changes anything.
    with pytest.raises(vault.VaultPermissionError, match="socialnet/data/staging/database"):
        vault.preflight(flows, mount=MOUNT, environment="staging", needs={"database": ("read",)})


def test_preflight_names_the_missing_path_and_never_a_value(
    openbao: OpenBao, tmp_path: Path
) -> None:
    bootstrap(openbao, "local", tmp_path)
    admin = openbao.admin()
    admin.call(
        "delete",
        lambda c: c.secrets.kv.v2.delete_metadata_and_all_versions(
            "local/webhooks", mount_point=MOUNT
        ),
    )
    flows = session_of(openbao, "flows", "local", tmp_path)
    secret = vault.read_secret(admin, MOUNT, "local/database")
    assert secret is not None
    with pytest.raises(vault.SecretMissingError) as raised:
        vault.preflight(
            flows,
            mount=MOUNT,
            environment="local",
            needs={"database": ("read",)},
            must_exist=["database", "webhooks"],
        )
    assert "socialnet/data/local/webhooks does not exist" in str(raised.value)
    assert secret.data["password"] not in str(raised.value)


def test_unreachable_and_sealed_vaults_stop_the_preflight(tmp_path: Path) -> None:
    gone = vault.VaultSession("http://127.0.0.1:9", vault.TokenLogin(lambda: "t"))
    with pytest.raises(vault.VaultUnavailableError, match=r"http://127\.0\.0\.1:9 is unreachable"):
        vault.preflight(gone, mount=MOUNT, environment="local", needs={})

    server = start_openbao()
    try:
        server.admin().call("sys/seal", lambda c: c.sys.seal())
        with pytest.raises(vault.VaultSealedError, match=f"{server.address} is sealed"):
            vault.preflight(server.admin(), mount=MOUNT, environment="local", needs={})
    finally:
        stop_openbao(server)


def test_a_wrong_secret_id_is_refused_with_the_role_named(openbao: OpenBao, tmp_path: Path) -> None:
    bootstrap(openbao, "local", tmp_path)
    session = vault.VaultSession(
        openbao.address, vault.AppRoleLogin("flows-local", lambda: "not-the-secret-id")
    )
    with pytest.raises(vault.VaultPermissionError, match="AppRole flows-local was refused"):
        vault.read_secret(session, MOUNT, "local/api")


def short_lived_role(server: OpenBao, ttl: str, max_ttl: str) -> vault.VaultSession:
    admin = server.admin()
    role = f"short-{ttl}-{max_ttl}"
    admin.call(
        "role",
        lambda c: c.auth.approle.create_or_update_approle(
            role, token_policies=["flows-local"], token_ttl=ttl, token_max_ttl=max_ttl
        ),
    )
    secret_id = admin.call("sid", lambda c: c.auth.approle.generate_secret_id(role))["data"][
        "secret_id"
    ]
    role_id = admin.call("rid", lambda c: c.auth.approle.read_role_id(role))["data"]["role_id"]
    return vault.VaultSession(server.address, vault.AppRoleLogin(role_id, lambda: secret_id))


def test_a_token_past_half_its_life_is_renewed(openbao: OpenBao, tmp_path: Path) -> None:
    bootstrap(openbao, "local", tmp_path)
    session = short_lived_role(openbao, "4s", "60s")
    assert vault.read_secret(session, MOUNT, "local/api") is not None
    time.sleep(2.5)
    assert vault.read_secret(session, MOUNT, "local/api") is not None
    assert (session.logins, session.renewals) == (1, 1)


def test_an_expired_token_is_replaced_by_a_new_login(openbao: OpenBao, tmp_path: Path) -> None:
    bootstrap(openbao, "local", tmp_path)
    session = short_lived_role(openbao, "2s", "2s")
    assert vault.read_secret(session, MOUNT, "local/api") is not None
    time.sleep(2.5)
    assert vault.read_secret(session, MOUNT, "local/api") is not None
    assert session.logins == 2


def test_a_token_revoked_under_the_session_is_replaced(openbao: OpenBao, tmp_path: Path) -> None:
    bootstrap(openbao, "local", tmp_path)
    session = session_of(openbao, "flows", "local", tmp_path)
    assert vault.read_secret(session, MOUNT, "local/api") is not None
    session.client().auth.token.revoke_self()
    assert vault.read_secret(session, MOUNT, "local/api") is not None
    assert session.logins == 2
