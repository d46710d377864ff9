"""Which secrets an environment has, where they live in Vault and how a new value is made.

Layout in the environment's KV v2 mount (`vault.mount`, default `socialnet`):

| path               | fields                                   | read by        |
| ------------------ | ---------------------------------------- | -------------- |
| `<env>/database`   | username, password                       | flows, api     |
| `<env>/api`        | token_secret, token_secret_previous      | flows, api     |
| `<env>/webhooks`   | gitlab_token                             | flows, webhooks|
| `<env>/backups`    | cipher_pass                              | flows          |

`backups/cipher_pass` encrypts pgBackRest's repositories: it is never replaced (a new one would
make every existing backup unreadable), and the platform writes it into pgbackrest.conf (0600,
PostgreSQL's system user), which archive-push reads for every WAL segment.

The database has two login roles (`socialnet_a`, `socialnet_b`, members of the owner role
`socialnet`); `username` says which one is current, so a rotation sets a new password on the other
one while the running replicas keep using theirs (see `flows/secrets.py`).

No Prefect here. Values never appear in a repr, a log line or an error message.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

# The owner of the database and its objects (NOLOGIN); the login roles alternate at each rotation.
DB_OWNER = "socialnet"
DB_LOGIN_ROLES = ("socialnet_a", "socialnet_b")
CONSUMERS = ("flows", "api", "webhooks")


def strong_token(nbytes: int = 32) -> str:
    """URL-safe random text: no quoting problem in files, URLs, env entries or SQL literals."""
    return secrets.token_urlsafe(nbytes)


@dataclass(frozen=True)
class SecretSpec:
    name: str
    # field -> generator of a new value; every field exists once the secret exists.
    fields: Mapping[str, Callable[[], str]]
    description: str
    replaceable: bool = True


CATALOG: tuple[SecretSpec, ...] = (
    SecretSpec(
        "database",
        {"username": lambda: DB_LOGIN_ROLES[0], "password": lambda: strong_token(32)},
        "PostgreSQL login of the API (current login role and its password)",
    ),
    SecretSpec(
        "api",
        # 48 bytes: an HS256 key longer than the hash output.
        {"token_secret": lambda: strong_token(48), "token_secret_previous": lambda: ""},
        "access-token signing key, and the previous one during a rotation overlap",
    ),
    SecretSpec(
        "webhooks",
        {"gitlab_token": lambda: strong_token(32)},
        "shared secret GitLab sends as X-Gitlab-Token",
    ),
    SecretSpec(
        "backups",
        {"cipher_pass": lambda: strong_token(48)},
        "pgBackRest repository cipher passphrase (never replaced: it opens every backup)",
        replaceable=False,
    ),
)
SECRET_NAMES = tuple(spec.name for spec in CATALOG)
# The fields whose values are secret (the rest, like the login role's name, are not).
SECRET_FIELDS = {
    "database": ("password",),
    "api": ("token_secret", "token_secret_previous"),
    "webhooks": ("gitlab_token",),
    "backups": ("cipher_pass",),
}
IRREPLACEABLE = tuple(item.name for item in CATALOG if not item.replaceable)


def spec(name: str) -> SecretSpec:
    for item in CATALOG:
        if item.name == name:
            return item
    raise KeyError(f"unknown secret {name!r}; known: {', '.join(SECRET_NAMES)}")


def secret_path(environment: str, name: str) -> str:
    """Path inside the KV mount: `<env>/<name>`."""
    return f"{environment}/{name}"


def generate(name: str) -> dict[str, str]:
    return {field: make() for field, make in spec(name).fields.items()}


def next_login_role(current: str) -> str:
    """The login role a rotation moves to (the legacy single role moves to the first one)."""
    if current not in DB_LOGIN_ROLES:
        return DB_LOGIN_ROLES[0]
    return DB_LOGIN_ROLES[1 - DB_LOGIN_ROLES.index(current)]


class RuntimeSecrets:
    """The values a platform hands the app, as read from Vault; its repr names no value."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, Mapping[str, str]]) -> None:
        missing = [name for name in ("database", "api") if name not in values]
        if missing:
            raise KeyError(f"runtime secrets lack {', '.join(missing)}")
        self._values = {name: dict(fields) for name, fields in values.items()}

    def __repr__(self) -> str:
        return f"RuntimeSecrets({', '.join(sorted(self._values))})"

    __str__ = __repr__

    @property
    def db_user(self) -> str:
        return self._values["database"]["username"]

    @property
    def db_password(self) -> str:
        return self._values["database"]["password"]

    @property
    def token_secret(self) -> str:
        return self._values["api"]["token_secret"]

    @property
    def token_secret_previous(self) -> str:
        return self._values["api"].get("token_secret_previous", "")

    @property
    def backup_cipher_pass(self) -> str | None:
        return self._values.get("backups", {}).get("cipher_pass") or None

    @property
    def webhook_token(self) -> str | None:
        return self._values.get("webhooks", {}).get("gitlab_token") or None

    def values(self) -> list[str]:
        """Every secret value (for redaction); login role names are not secret."""
        return [
            value
            for name, fields in self._values.items()
            for key, value in fields.items()
            if value and key in SECRET_FIELDS.get(name, ())
        ]

    def kubernetes_data(self) -> dict[str, str]:
        """Keys of the Secret `socialnet-secrets` the chart mounts (values.yaml `secrets`)."""
        data = {
            "db-user": self.db_user,
            "db-password": self.db_password,
            "token-secret": self.token_secret,
            "token-secret-previous": self.token_secret_previous,
        }
        if self.webhook_token:
            data["webhook-token"] = self.webhook_token
        return data


def kubernetes_secret_body(
    values: RuntimeSecrets, name: str = "socialnet-secrets"
) -> dict[str, Any]:
    """The Secret the chart mounts (`secrets.existingSecret`); namespace set by the writer."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/managed-by": "socialnet-ops-secrets"},
        },
        "stringData": values.kubernetes_data(),
    }
