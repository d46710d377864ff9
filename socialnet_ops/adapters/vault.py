"""Vault (OpenBao) with hvac: sessions that stay logged in, KV v2, preflight, bootstrap, rotation.

No Prefect here (tasks/vault.py wraps these). Every error names the address and the path, never a
value; values are returned only to the code that installs them on a platform.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import hvac
import hvac.exceptions
import requests

from socialnet_ops.adapters.files import write_atomic
from socialnet_ops.core.environments import Environment
from socialnet_ops.core.paths import repo_root
from socialnet_ops.core.secrets_catalog import (
    CATALOG,
    CONSUMERS,
    IRREPLACEABLE,
    RuntimeSecrets,
    generate,
    next_login_role,
    secret_path,
    spec,
    strong_token,
)

T = TypeVar("T")

POLICIES_DIR = repo_root() / "infrastructure" / "vault" / "policies"
# Short-lived tokens, renewed while in use; a new login once the maximum is reached.
TOKEN_TTL = "5m"  # noqa: S105 - a duration
TOKEN_MAX_TTL = "1h"  # noqa: S105 - a duration
REQUEST_TIMEOUT = 10.0
# Set while a database rotation is in flight: which login role must be revoked at the end.
ROTATING_FROM = "rotating_from"


class VaultError(Exception):
    """Vault cannot be used; the message names the address and the path, never a value."""


class VaultUnavailableError(VaultError):
    pass


class VaultSealedError(VaultError):
    pass


class VaultPermissionError(VaultError):
    pass


class SecretMissingError(VaultError):
    pass


# --- logging in -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AppRoleLogin:
    """AppRole: the role id comes from configuration, the secret id from `secret_id()` (a file
    or a Prefect Secret block), read at each login so a re-issued secret id is picked up."""

    role_id: str
    secret_id: Callable[[], str] = field(repr=False)

    def describe(self) -> str:
        return f"AppRole {self.role_id}"

    def login(self, client: hvac.Client) -> None:
        client.auth.approle.login(role_id=self.role_id, secret_id=self.secret_id(), use_token=True)


@dataclass(frozen=True)
class TokenLogin:
    """A token given from outside (the local dev server's root token, an operator's token)."""

    token: Callable[[], str] = field(repr=False)
    name: str = "token"

    def describe(self) -> str:
        return self.name

    def login(self, client: hvac.Client) -> None:
        client.token = self.token()


Login = AppRoleLogin | TokenLogin


def _client(address: str, token: str | None = None) -> hvac.Client:
    return hvac.Client(url=address, token=token, timeout=REQUEST_TIMEOUT)


class VaultSession:
    """One logged-in identity: renews its token past half its life, logs in again once it expired.

    `call()` maps hvac's errors to VaultError subclasses naming the address and the path.
    """

    def __init__(
        self,
        address: str,
        login: Login,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.address = address.rstrip("/")
        self.login = login
        self._clock = clock
        self._client: hvac.Client | None = None
        self._ttl = 0.0
        self._renewable = False
        self._expires_at = 0.0
        self.logins = 0
        self.renewals = 0

    def describe(self) -> str:
        return f"{self.login.describe()} at {self.address}"

    def _unreachable(self, what: str, error: Exception) -> VaultUnavailableError:
        return VaultUnavailableError(
            f"Vault at {self.address} is unreachable while accessing {what} "
            f"({type(error).__name__}); check that it runs and the address is right"
        )

    def _record(self, ttl: float, renewable: bool) -> None:
        self._ttl = ttl
        self._renewable = renewable
        # ttl 0 is a token that never expires (a dev root token).
        self._expires_at = self._clock() + ttl if ttl else float("inf")

    def _login(self) -> hvac.Client:
        client = _client(self.address)
        try:
            self.login.login(client)
            info = client.auth.token.lookup_self()["data"]
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as error:
            raise self._unreachable("auth (login)", error) from None
        except hvac.exceptions.VaultDown:
            raise VaultSealedError(
                f"Vault at {self.address} is sealed; unseal it before running this flow"
            ) from None
        except (
            hvac.exceptions.Forbidden,
            hvac.exceptions.InvalidRequest,
            hvac.exceptions.Unauthorized,
        ):
            raise VaultPermissionError(
                f"Vault at {self.address}: login with {self.login.describe()} was refused "
                "(wrong role id or secret id, expired secret id, or revoked token)"
            ) from None
        self._record(float(info.get("ttl") or 0), bool(info.get("renewable")))
        self._client = client
        self.logins += 1
        return client

    def client(self) -> hvac.Client:
        """A client with a valid token: renewed when past half its life, else a new login."""
        if self._client is None or self._clock() >= self._expires_at:
            return self._login()
        remaining = self._expires_at - self._clock()
        if self._ttl and remaining < self._ttl / 2:
            if not self._renewable:
                return self._login()
            try:
                auth = self._client.auth.token.renew_self()["auth"]
            except (
                hvac.exceptions.Forbidden,
                hvac.exceptions.InvalidRequest,
                hvac.exceptions.Unauthorized,
            ):
                return self._login()
            except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as error:
                raise self._unreachable("auth/token/renew-self", error) from None
            ttl = float(auth.get("lease_duration") or 0)
            if ttl < self._ttl / 4:
                # The token reached its maximum life: a renewal would only add seconds.
                return self._login()
            self._record(ttl, bool(auth.get("renewable")))
            self.renewals += 1
        return self._client

    def _token_valid(self, client: hvac.Client) -> bool:
        try:
            client.auth.token.lookup_self()
        except hvac.exceptions.VaultError:
            return False
        return True

    def call(self, what: str, operation: Callable[[hvac.Client], T]) -> T:
        """Run `operation`; an expired or revoked token is replaced by a new login once."""
        for attempt in (1, 2):
            client = self.client()
            try:
                return operation(client)
            except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as error:
                raise self._unreachable(what, error) from None
            except hvac.exceptions.VaultDown:
                raise VaultSealedError(
                    f"Vault at {self.address} is sealed (while accessing {what}); unseal it first"
                ) from None
            except hvac.exceptions.Forbidden:
                if attempt == 1 and not self._token_valid(client):
                    self._client = None  # expired or revoked under us: log in again
                    continue
                raise VaultPermissionError(
                    f"Vault at {self.address}: permission denied on {what} for "
                    f"{self.login.describe()}"
                ) from None
        raise AssertionError("unreachable")


# --- where an environment's Vault is ---------------------------------------------------------------


def read_token_file(path: Path, what: str) -> str:
    try:
        value = path.read_text().strip()
    except FileNotFoundError:
        raise VaultPermissionError(f"{what} file {path} does not exist") from None
    if not value:
        raise VaultPermissionError(f"{what} file {path} is empty")
    return value


# --- health and preflight -------------------------------------------------------------------------


def check_health(address: str, wait: float = 0.0) -> dict[str, Any]:
    """Reachable, initialized and unsealed, else a VaultError naming the address.

    `wait` seconds of retries cover a server that is still starting.
    """
    url = f"{address.rstrip('/')}/v1/sys/health"
    params = {"standbyok": "true", "sealedcode": "200", "uninitcode": "200"}
    deadline = time.monotonic() + wait
    while True:
        try:
            body: dict[str, Any] = httpx.get(url, params=params, timeout=5).json()
        except (httpx.HTTPError, ValueError) as error:
            if time.monotonic() < deadline:
                time.sleep(0.2)
                continue
            raise VaultUnavailableError(
                f"Vault at {address} is unreachable ({type(error).__name__} on /v1/sys/health); "
                "check that it runs and the address is right"
            ) from None
        if not body.get("initialized", False):
            raise VaultSealedError(f"Vault at {address} is not initialized (bao operator init)")
        if body.get("sealed", True):
            if time.monotonic() < deadline:
                time.sleep(0.2)
                continue
            raise VaultSealedError(
                f"Vault at {address} is sealed; unseal it (bao operator unseal) and run again"
            )
        return body


def api_path(mount: str, environment: str, name: str) -> str:
    """The ACL path of a secret: `<mount>/data/<env>/<name>`."""
    return f"{mount}/data/{secret_path(environment, name)}"


def capabilities(session: VaultSession, paths: list[str]) -> dict[str, set[str]]:
    def ask(client: hvac.Client) -> Any:
        return client.adapter.post("/v1/sys/capabilities-self", json={"paths": paths})

    answer = session.call("sys/capabilities-self", ask)
    data = answer.get("data", answer) if isinstance(answer, dict) else {}
    return {path: set(data.get(path) or []) for path in paths}


def preflight(
    session: VaultSession,
    *,
    mount: str,
    environment: str,
    needs: Mapping[str, Iterable[str]],
    must_exist: Iterable[str] = (),
) -> list[str]:
    """Before a flow changes anything: Vault answers, is unsealed, the token is valid, the policy
    grants `needs` ({secret name: capabilities}) and the `must_exist` secrets exist.

    Returns what was checked, one line each (no value).
    """
    checked = []
    health = check_health(session.address)
    checked.append(f"Vault at {session.address} answers, unsealed ({health.get('version', '?')})")
    session.call("auth/token/lookup-self", lambda client: client.auth.token.lookup_self())
    checked.append(f"logged in as {session.login.describe()}, token valid")
    wanted = {api_path(mount, environment, name): set(caps) for name, caps in needs.items()}
    granted = capabilities(session, list(wanted)) if wanted else {}
    for path, caps in wanted.items():
        lacking = caps - granted[path]
        if "root" in granted[path]:
            lacking = set()
        if lacking:
            raise VaultPermissionError(
                f"Vault at {session.address}: {session.login.describe()} may not "
                f"{'/'.join(sorted(lacking))} {path} (has: {', '.join(sorted(granted[path])) or 'nothing'}); "
                "nothing was changed"
            )
        checked.append(f"{path}: {', '.join(sorted(caps))} allowed")
    for name in must_exist:
        if read_secret(session, mount, secret_path(environment, name)) is None:
            raise SecretMissingError(
                f"Vault at {session.address}: {api_path(mount, environment, name)} does not "
                f"exist; create it with the secrets flow (`socialnet-ops secrets --env "
                f"{environment}`); nothing was changed"
            )
        checked.append(f"{api_path(mount, environment, name)} exists")
    return checked


# --- KV v2 -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SecretVersion:
    data: dict[str, str] = field(repr=False)
    version: int


def read_secret(session: VaultSession, mount: str, path: str) -> SecretVersion | None:
    def read(client: hvac.Client) -> Any:
        return client.secrets.kv.v2.read_secret_version(
            path=path, mount_point=mount, raise_on_deleted_version=True
        )

    try:
        answer = session.call(f"{mount}/data/{path}", read)
    except hvac.exceptions.InvalidPath:
        return None
    return SecretVersion(
        data={str(k): str(v) for k, v in answer["data"]["data"].items()},
        version=int(answer["data"]["metadata"]["version"]),
    )


def secret_versions(
    session: VaultSession, mount: str, environment: str, names: Sequence[str]
) -> dict[str, int]:
    """The current KV version of each secret, read from metadata: never a value."""
    versions = {}
    for name in names:
        path = f"{environment}/{name}"

        def metadata(client: hvac.Client, path: str = path) -> Any:
            return client.secrets.kv.v2.read_secret_metadata(path=path, mount_point=mount)

        try:
            answer = session.call(f"{mount}/metadata/{path}", metadata)
        except hvac.exceptions.InvalidPath:
            continue
        versions[name] = int(answer["data"]["current_version"])
    return versions


def write_secret(
    session: VaultSession, mount: str, path: str, data: Mapping[str, str], cas: int | None
) -> int:
    """Write a new version; `cas` 0 creates only, N updates only version N (no lost update)."""

    def write(client: hvac.Client) -> Any:
        return client.secrets.kv.v2.create_or_update_secret(
            path=path, secret=dict(data), cas=cas, mount_point=mount
        )

    try:
        answer = session.call(f"{mount}/data/{path}", write)
    except hvac.exceptions.InvalidRequest as error:
        if "check-and-set" in str(error):
            raise VaultError(
                f"Vault at {session.address}: {mount}/data/{path} changed while this run wrote "
                "it (check-and-set); run again"
            ) from None
        raise VaultError(
            f"Vault at {session.address}: writing {mount}/data/{path} failed"
        ) from None
    return int(answer["data"]["version"])


def require_secret(session: VaultSession, mount: str, environment: str, name: str) -> SecretVersion:
    found = read_secret(session, mount, secret_path(environment, name))
    if found is None:
        raise SecretMissingError(
            f"Vault at {session.address}: {api_path(mount, environment, name)} does not exist; "
            f"create it with the secrets flow (`socialnet-ops secrets --env {environment}`)"
        )
    return found


def read_runtime_secrets(
    session: VaultSession, mount: str, environment: str, with_webhooks: bool = True
) -> RuntimeSecrets:
    """What the app needs (database, api) and, for whoever may read them (the flows), the
    webhook token and the backup repository's passphrase."""
    values = {
        name: require_secret(session, mount, environment, name).data for name in ("database", "api")
    }
    if with_webhooks:
        webhooks = read_secret(session, mount, secret_path(environment, "webhooks"))
        if webhooks is not None:
            values["webhooks"] = webhooks.data
        backups = read_secret(session, mount, secret_path(environment, "backups"))
        if backups is not None:
            values["backups"] = backups.data
    return RuntimeSecrets(values)


# --- bootstrap ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One thing the bootstrap or a rotation looked at, and what it did (never a value)."""

    what: str
    action: str  # created, updated, unchanged, kept, recovered, replaced, completed, rotated

    def row(self) -> dict[str, str]:
        return {"item": self.what, "action": self.action}


def consumer_role(consumer: str, environment: str, flows_role: str) -> str:
    return flows_role if consumer == "flows" else f"{consumer}-{environment}"


def render_policy(consumer: str, environment: str, mount: str, role: str) -> str:
    template = (POLICIES_DIR / f"{consumer}.hcl").read_text()
    return (
        template.replace("{{environment}}", environment)
        .replace("{{mount}}", mount)
        .replace("{{role}}", role)
    )


def ensure_layout(
    admin: VaultSession, *, environment: str, mount: str, flows_role: str
) -> list[Change]:
    """KV v2 mount, the three policies and AppRole roles of `environment` (idempotent)."""
    changes: list[Change] = []
    mounts = admin.call("sys/mounts", lambda c: c.sys.list_mounted_secrets_engines())
    mounts = mounts.get("data", mounts)
    existing = mounts.get(f"{mount}/")
    if existing is None:
        admin.call(
            f"sys/mounts/{mount}",
            lambda c: c.sys.enable_secrets_engine(
                backend_type="kv", path=mount, options={"version": "2"}
            ),
        )
        changes.append(Change(f"KV v2 mount {mount}/", "created"))
    elif existing.get("type") != "kv" or (existing.get("options") or {}).get("version") != "2":
        raise VaultError(
            f"Vault at {admin.address}: {mount}/ is mounted as {existing.get('type')} "
            f"(options {existing.get('options')}), not KV version 2; choose another vault.mount"
        )
    else:
        changes.append(Change(f"KV v2 mount {mount}/", "unchanged"))

    methods = admin.call("sys/auth", lambda c: c.sys.list_auth_methods())
    methods = methods.get("data", methods)
    if "approle/" not in methods:
        admin.call("sys/auth/approle", lambda c: c.sys.enable_auth_method(method_type="approle"))
        changes.append(Change("auth method approle/", "created"))

    for consumer in CONSUMERS:
        policy = f"{consumer}-{environment}"
        role = consumer_role(consumer, environment, flows_role)
        text = render_policy(consumer, environment, mount, role)
        try:
            current = admin.call(f"sys/policies/acl/{policy}", _reading_policy(policy))
            current_text = current.get("data", current).get("policy")
        except hvac.exceptions.InvalidPath:
            current_text = None
        if current_text != text:
            admin.call(f"sys/policies/acl/{policy}", _writing_policy(policy, text))
        changes.append(
            Change(
                f"policy {policy}",
                "unchanged"
                if current_text == text
                else "created"
                if current_text is None
                else "updated",
            )
        )
        changes.append(_ensure_role(admin, role, policy))
    return changes


def _reading_policy(name: str) -> Callable[[hvac.Client], Any]:
    return lambda client: client.sys.read_acl_policy(name)


def _writing_policy(name: str, text: str) -> Callable[[hvac.Client], Any]:
    return lambda client: client.sys.create_or_update_acl_policy(name, text)


def _ensure_role(admin: VaultSession, role: str, policy: str) -> Change:
    wanted = {
        "token_policies": [policy],
        "token_ttl": TOKEN_TTL,
        "token_max_ttl": TOKEN_MAX_TTL,
        "token_type": "service",
        "secret_id_ttl": "0",
    }
    try:
        current = admin.call(f"auth/approle/role/{role}", lambda c: c.auth.approle.read_role(role))[
            "data"
        ]
    except hvac.exceptions.InvalidPath:
        current = None
    same = current is not None and (
        current.get("token_policies") == [policy]
        and int(current.get("token_ttl") or 0) == _seconds(TOKEN_TTL)
        and int(current.get("token_max_ttl") or 0) == _seconds(TOKEN_MAX_TTL)
    )
    if not same:
        admin.call(
            f"auth/approle/role/{role}",
            lambda c: c.auth.approle.create_or_update_approle(role, **wanted),
        )
    role_id = admin.call(
        f"auth/approle/role/{role}/role-id", lambda c: c.auth.approle.read_role_id(role)
    )["data"]["role_id"]
    if role_id != role:
        # The role id is the role's name: configuration (vault.auth.role) carries it, not a file.
        admin.call(
            f"auth/approle/role/{role}/role-id",
            lambda c: c.auth.approle.update_role_id(role, role_id=role),
        )
    return Change(
        f"AppRole {role}", "unchanged" if same else "created" if current is None else "updated"
    )


def _seconds(duration: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600}
    return int(duration[:-1]) * units[duration[-1]]


def ensure_secret_id_file(admin: VaultSession, role: str, path: Path) -> Change:
    """A working secret id for `role` in a 0600 file: kept when it still logs in, else issued."""
    if path.exists():
        probe = _client(admin.address)
        try:
            probe.auth.approle.login(role_id=role, secret_id=path.read_text().strip())
        except hvac.exceptions.VaultError:
            pass
        else:
            with contextlib.suppress(hvac.exceptions.VaultError):
                probe.auth.token.revoke_self()
            return Change(f"secret id of {role} ({path.name})", "kept")
    answer = admin.call(
        f"auth/approle/role/{role}/secret-id", lambda c: c.auth.approle.generate_secret_id(role)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    write_atomic(path, answer["data"]["secret_id"] + "\n", mode=0o600)
    return Change(f"secret id of {role} ({path.name})", "created")


def ensure_secret_id_files(
    admin: VaultSession, *, environment: str, flows_role: str, files: Mapping[str, Path]
) -> list[Change]:
    """`ensure_secret_id_file` for each consumer's file (`files`: consumer -> path)."""
    return [
        ensure_secret_id_file(admin, consumer_role(consumer, environment, flows_role), path)
        for consumer, path in files.items()
    ]


Recover = Callable[[str], Mapping[str, str] | None]


def ensure_secrets(
    session: VaultSession,
    *,
    mount: str,
    environment: str,
    replace: Iterable[str] = (),
    recover: Recover | None = None,
) -> list[Change]:
    """Create every missing secret with strong random values; an existing one is kept unless its
    name is in `replace`. `recover` may return the last installed copy of a missing secret (the
    local dev server forgets everything when it stops)."""
    replace = set(replace)
    unknown = replace - {item.name for item in CATALOG}
    if unknown:
        raise VaultError(f"cannot replace unknown secrets {sorted(unknown)}")
    kept_forever = sorted(replace & set(IRREPLACEABLE))
    if kept_forever:
        raise VaultError(
            f"cannot replace {', '.join(kept_forever)}: a new value would make every existing "
            "backup unreadable"
        )
    changes = []
    for item in CATALOG:
        path = secret_path(environment, item.name)
        label = f"{mount}/{path}"
        current = read_secret(session, mount, path)
        if current is not None and item.name not in replace:
            missing = [name for name in item.fields if name not in current.data]
            if not missing:
                changes.append(Change(label, "kept"))
                continue
            completed = {**current.data, **{name: item.fields[name]() for name in missing}}
            write_secret(session, mount, path, completed, cas=current.version)
            changes.append(Change(label, f"completed ({', '.join(missing)})"))
            continue
        recovered = recover(item.name) if (recover and current is None) else None
        values = dict(recovered) if recovered else generate(item.name)
        write_secret(session, mount, path, values, cas=current.version if current else 0)
        action = "replaced" if current else "recovered" if recovered else "created"
        changes.append(Change(label, action))
    return changes


def bootstrap_environment(
    admin: VaultSession,
    *,
    environment: str,
    mount: str,
    flows_role: str,
    secret_id_files: Mapping[str, Path] | None = None,
    recover: Recover | None = None,
) -> list[Change]:
    """Layout, secret id files (local) and missing secrets, with an admin session."""
    changes = ensure_layout(admin, environment=environment, mount=mount, flows_role=flows_role)
    changes += ensure_secret_id_files(
        admin, environment=environment, flows_role=flows_role, files=secret_id_files or {}
    )
    changes += ensure_secrets(admin, mount=mount, environment=environment, recover=recover)
    return changes


# --- rotation --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatabaseRotation:
    from_user: str
    to_user: str
    version: int
    resumed: bool = False


def rotate_database_secret(session: VaultSession, mount: str, environment: str) -> DatabaseRotation:
    """A new password for the other login role; a rotation interrupted before its end resumes."""
    path = secret_path(environment, "database")
    current = require_secret(session, mount, environment, "database")
    pending = current.data.get(ROTATING_FROM)
    if pending:
        return DatabaseRotation(pending, current.data["username"], current.version, resumed=True)
    to_user = next_login_role(current.data["username"])
    version = write_secret(
        session,
        mount,
        path,
        {
            "username": to_user,
            "password": strong_token(32),
            ROTATING_FROM: current.data["username"],
        },
        cas=current.version,
    )
    return DatabaseRotation(current.data["username"], to_user, version)


def finish_database_rotation(session: VaultSession, mount: str, environment: str) -> int:
    """The old login is revoked: forget which one it was."""
    current = require_secret(session, mount, environment, "database")
    if ROTATING_FROM not in current.data:
        return current.version
    data = {k: v for k, v in current.data.items() if k != ROTATING_FROM}
    return write_secret(session, mount, secret_path(environment, "database"), data, current.version)


def rotate_token_key(session: VaultSession, mount: str, environment: str) -> int:
    """New signing key; the current one becomes the previous key, still accepted (overlap)."""
    current = require_secret(session, mount, environment, "api")
    data = {
        **current.data,
        "token_secret": spec("api").fields["token_secret"](),
        "token_secret_previous": current.data["token_secret"],
    }
    return write_secret(session, mount, secret_path(environment, "api"), data, current.version)


def end_token_overlap(session: VaultSession, mount: str, environment: str) -> int | None:
    """Drop the previous signing key (None when there was none)."""
    current = require_secret(session, mount, environment, "api")
    if not current.data.get("token_secret_previous"):
        return None
    data = {**current.data, "token_secret_previous": ""}
    return write_secret(session, mount, secret_path(environment, "api"), data, current.version)


# --- consumers other than the flows ------------------------------------------------------------------


def webhook_token(environment: Environment, address: str, secret_id_path: Path) -> str:
    """The webhook receiver's token, read with its own AppRole (`webhooks-<env>`, read-only).

    The seam `webhooks/token.py` can call instead of reading SOCIALNET_WEBHOOK_TOKEN_FILE.
    """
    session = VaultSession(
        address,
        AppRoleLogin(
            f"webhooks-{environment.name}",
            lambda: read_token_file(secret_id_path, "webhooks AppRole secret id"),
        ),
    )
    found = require_secret(session, environment.vault.mount, environment.name, "webhooks")
    return found.data["gitlab_token"]
