"""Vault layout, policies and the secret catalog: pure logic, no server."""

from __future__ import annotations

import re

import pytest

from flows.secrets import checked_secret_names
from socialnet_ops.adapters.vault import CONSUMERS, VaultError, ensure_secrets, render_policy
from socialnet_ops.core.environments import environment_names
from socialnet_ops.core.secrets_catalog import (
    CATALOG,
    DB_LOGIN_ROLES,
    IRREPLACEABLE,
    RuntimeSecrets,
    generate,
    kubernetes_secret_body,
    next_login_role,
)

pytestmark = pytest.mark.unit

PATH = re.compile(r'^path "([^"]+)"', re.MULTILINE)


def runtime(**overrides: str) -> RuntimeSecrets:
    values = {
        "database": {"username": "socialnet_b", "password": "pw-" + "x" * 40},
        "api": {"token_secret": "key-" + "y" * 60, "token_secret_previous": ""},
        "webhooks": {"gitlab_token": "hook-" + "z" * 40},
    }
    for key, value in overrides.items():
        name, field = key.split("__")
        values[name][field] = value
    return RuntimeSecrets(values)


@pytest.mark.parametrize("environment", environment_names())
@pytest.mark.parametrize("consumer", CONSUMERS)
def test_every_policy_names_only_its_own_environment(consumer: str, environment: str) -> None:
    text = render_policy(consumer, environment, "socialnet", f"{consumer}-{environment}")
    paths = PATH.findall(text)
    assert paths, text
    for path in paths:
        assert path.startswith(
            (f"socialnet/data/{environment}/", f"socialnet/metadata/{environment}/")
        )
    assert "{{" not in text
    granted = " ".join(re.findall(r"capabilities = \[(.*)\]", text))
    assert "delete" not in granted and "sudo" not in granted


def test_consumers_other_than_the_flows_only_read_what_they_use() -> None:
    api = render_policy("api", "staging", "socialnet", "api-staging")
    webhooks = render_policy("webhooks", "staging", "socialnet", "webhooks-staging")
    assert set(PATH.findall(api)) == {
        "socialnet/data/staging/database",
        "socialnet/data/staging/api",
    }
    assert set(PATH.findall(webhooks)) == {"socialnet/data/staging/webhooks"}
    for text in (api, webhooks):
        assert set(re.findall(r"capabilities = \[(.*)\]", text)) == {'"read"'}


def test_generated_values_are_strong_and_distinct() -> None:
    first, second = generate("database"), generate("database")
    assert first["username"] == DB_LOGIN_ROLES[0]
    assert len(first["password"]) >= 40 and first["password"] != second["password"]
    assert len(generate("api")["token_secret"]) >= 60
    assert generate("api")["token_secret_previous"] == ""
    assert {spec.name for spec in CATALOG} == {"database", "api", "webhooks", "backups"}
    cipher = generate("backups")["cipher_pass"]
    assert len(cipher) >= 48 and cipher != generate("backups")["cipher_pass"]


def test_login_roles_alternate_and_the_legacy_role_moves_to_the_first() -> None:
    assert next_login_role("socialnet_a") == "socialnet_b"
    assert next_login_role("socialnet_b") == "socialnet_a"
    assert next_login_role("socialnet") == "socialnet_a"


def test_runtime_secrets_never_show_a_value() -> None:
    secrets = runtime()
    for text in (repr(secrets), str(secrets), f"{secrets}"):
        assert "pw-" not in text and "key-" not in text and "hook-" not in text
    # The login role's name is not secret: redaction must not hide it from logs.
    assert "socialnet_b" not in secrets.values()
    assert len(secrets.values()) == 3


def test_the_kubernetes_secret_has_the_keys_the_chart_mounts() -> None:
    body = kubernetes_secret_body(runtime(api__token_secret_previous="old-key"))
    assert body["metadata"]["name"] == "socialnet-secrets"
    assert {"db-password", "token-secret", "token-secret-previous"} <= set(body["stringData"])
    assert body["stringData"]["token-secret-previous"] == "old-key"


def test_replace_accepts_only_catalog_names() -> None:
    assert checked_secret_names(["api", "api"]) == ["api"]
    with pytest.raises(ValueError, match="unknown secrets \\['passwords'\\]"):
        checked_secret_names(["passwords"])


def test_the_backup_cipher_passphrase_is_never_replaced() -> None:
    # A new passphrase would make every backup already in the repositories unreadable.
    assert IRREPLACEABLE == ("backups",)
    assert [spec.name for spec in CATALOG if not spec.replaceable] == ["backups"]
    with pytest.raises(ValueError, match="backups is never replaced"):
        checked_secret_names(["api", "backups"])
    assert checked_secret_names(["api", "database", "webhooks"]) == ["api", "database", "webhooks"]


def test_vault_refuses_to_replace_the_backup_passphrase_before_touching_anything() -> None:
    class Untouchable:
        def __getattr__(self, name: str) -> object:
            raise AssertionError(f"ensure_secrets used the session ({name}) before refusing")

    with pytest.raises(VaultError, match="cannot replace backups: a new value would make"):
        ensure_secrets(
            Untouchable(),  # type: ignore[arg-type]
            mount="socialnet",
            environment="local",
            replace=["backups", "api"],
        )


def test_runtime_secrets_hide_the_backup_passphrase_and_give_it_to_the_flows() -> None:
    secrets = RuntimeSecrets(
        {
            "database": {"username": "socialnet_a", "password": "pw-" + "x" * 40},
            "api": {"token_secret": "key-" + "y" * 60, "token_secret_previous": ""},
            "backups": {"cipher_pass": "cipher-" + "c" * 48},
        }
    )
    assert secrets.backup_cipher_pass == "cipher-" + "c" * 48
    assert "cipher-" not in repr(secrets)
    assert "cipher-" + "c" * 48 in secrets.values()  # redacted from logs like the others
    # Only the flows read it: the app's Kubernetes Secret does not carry it.
    assert "cipher-" + "c" * 48 not in kubernetes_secret_body(secrets)["stringData"].values()
    assert runtime().backup_cipher_pass is None  # an environment that never had one
