"""The secrets, deploy and rotate flows on a real local platform (OpenBao dev server, PostgreSQL,
HAProxy, API replicas), reported to a real Prefect server; then a scan for leaked values."""

from __future__ import annotations

import os
import stat
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest
from prefect.client.orchestration import get_client

from flows.deploy import deploy
from flows.secrets import rotate, secrets
from socialnet_ops.adapters import vault
from socialnet_ops.core.environments import load_environment
from socialnet_ops.core.secrets_catalog import SECRET_FIELDS, SECRET_NAMES
from socialnet_ops.platforms.local import LocalPlatform
from socialnet_ops.platforms.local.tools import read_secret
from tests.support.prefect import running_local_platform

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MOUNT = "socialnet"
# Values seen during the module (older versions may be gone from Vault by the final scan).
SEEN: dict[str, str] = {}


@pytest.fixture(scope="module")
def platform(prefect_server: None) -> Iterator[LocalPlatform]:
    with running_local_platform(load_environment("local"), prefix="snvault-") as local:
        yield local


def root_session(platform: LocalPlatform) -> vault.VaultSession:
    return vault.VaultSession(
        platform.vault_address,
        vault.TokenLogin(lambda: read_secret(platform.vault_token_file), "root"),
    )


@dataclass
class Traffic:
    """Through the edge at a steady rate: database reads and an authenticated call with a token
    issued before the rotation. Bounded in count and time."""

    edge: str
    token: str
    username: str
    rate: float = 20.0
    max_requests: int = 4000
    max_seconds: float = 240.0
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=self.edge, timeout=10) as client:
            for count in range(self.max_requests):
                if self._stop.is_set() or time.monotonic() > deadline:
                    return
                began = time.monotonic()
                path = "/api/users/me" if count % 2 else f"/api/users/{self.username}"
                try:
                    response = client.get(path, headers=headers)
                    if response.status_code == 200:
                        self.ok += 1
                    else:
                        self.failures.append(f"{path}: {response.status_code} {response.text[:80]}")
                except httpx.HTTPError as error:
                    self.failures.append(f"{path}: {error!r}")
                self._stop.wait(max(0.0, 1 / self.rate - (time.monotonic() - began)))


def test_the_secrets_flow_is_idempotent(platform: LocalPlatform) -> None:
    # The platform's start bootstrapped Vault already: the flow finds everything in place.
    result = secrets(env="local")
    assert {row["action"] for row in result.layout} <= {"unchanged", "kept"}, result.layout
    assert {row["action"] for row in result.secrets} == {"kept"}
    again = secrets(env="local")
    assert again.secrets == result.secrets


def test_rotation_under_load_loses_no_request(platform: LocalPlatform) -> None:
    version = f"sv-{uuid.uuid4().hex[:6]}"
    deploy(env="local", version=version)
    edge = platform.endpoints().edge_url
    username = f"rot_{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=edge, timeout=10) as client:
        assert (
            client.post("/api/users", json={"username": username, "password": "p" * 12}).status_code
            == 201
        )
        token = client.post(
            "/api/auth/token", json={"username": username, "password": "p" * 12}
        ).json()["access_token"]
    old = vault.read_runtime_secrets(root_session(platform), MOUNT, "local")
    SEEN.update({f"before rotation {i}": value for i, value in enumerate(old.values())})

    traffic = Traffic(edge, token, username)
    thread = threading.Thread(target=traffic.run, daemon=True)
    thread.start()
    try:
        time.sleep(1)
        outcome = rotate(env="local")
        time.sleep(1)
    finally:
        traffic._stop.set()
        thread.join(timeout=15)

    assert traffic.failures == [], traffic.failures[:5]
    assert traffic.ok >= 100
    new = vault.read_runtime_secrets(root_session(platform), MOUNT, "local")
    SEEN.update({f"after rotation {i}": value for i, value in enumerate(new.values())})
    assert outcome.database == {
        "from": old.db_user,
        "to": new.db_user,
        "version": 2,
        "resumed": False,
    }
    assert new.db_password != old.db_password
    assert (new.token_secret, new.token_secret_previous) != (old.token_secret, "")
    assert new.token_secret_previous == old.token_secret
    # The old login is revoked; the new one works.
    port = platform.endpoints().database_port
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(
            host="127.0.0.1",
            port=port,
            dbname="socialnet",
            user=old.db_user,
            password=old.db_password,
        )
    psycopg.connect(
        host="127.0.0.1", port=port, dbname="socialnet", user=new.db_user, password=new.db_password
    ).close()

    # A token issued before the rotation works during the overlap, and no more after it.
    me = httpx.get(f"{edge}/api/users/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200
    rotate(env="local", database=False, token_key=False, end_overlap=True)
    me = httpx.get(f"{edge}/api/users/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 401


def test_deploy_stops_before_changing_anything_when_a_secret_is_missing(
    platform: LocalPlatform,
) -> None:
    serving = platform.status().stable_version
    root = root_session(platform)
    root.call(
        "delete",
        lambda c: c.secrets.kv.v2.delete_metadata_and_all_versions("local/api", mount_point=MOUNT),
    )
    try:
        with pytest.raises(Exception, match="socialnet/data/local/api does not exist"):
            deploy(env="local", version=f"never-{uuid.uuid4().hex[:6]}")
        assert platform.status().stable_version == serving
    finally:
        # The flow recreates it from the copy the platform installed: nothing changes for users.
        result = secrets(env="local")
    assert {row["item"]: row["action"] for row in result.secrets}[
        f"{MOUNT}/local/api"
    ] == "recovered"


def every_secret_value(platform: LocalPlatform) -> dict[str, str]:
    """Every version of every secret of the environment, the root token and the secret ids."""
    root = root_session(platform)
    values = {"root token": read_secret(platform.vault_token_file)}
    for consumer in ("flows", "webhooks"):
        values[f"secret id {consumer}"] = read_secret(platform.vault_secret_id_file(consumer))
    fields = SECRET_FIELDS
    for name in SECRET_NAMES:
        metadata = root.call(
            "metadata",
            lambda c, n=name: c.secrets.kv.v2.read_secret_metadata(f"local/{n}", mount_point=MOUNT),
        )
        for number in metadata["data"]["versions"]:
            data = root.call(
                "version",
                lambda c, n=name, v=number: c.secrets.kv.v2.read_secret_version(
                    f"local/{n}", version=int(v), mount_point=MOUNT, raise_on_deleted_version=True
                ),
            )["data"]["data"]
            for key in fields[name]:
                if data.get(key):
                    values[f"{name}.{key} v{number}"] = data[key]
    return values


def prefect_records() -> list[tuple[str, str]]:
    """Every log line, artifact, flow run (with its parameters) and task run of the server."""
    records: list[tuple[str, str]] = []
    with get_client(sync_client=True) as client:
        for reader, label in (
            (client.read_logs, "log"),
            (client.read_artifacts, "artifact"),
            (client.read_flow_runs, "flow run"),
            (client.read_task_runs, "task run"),
        ):
            offset = 0
            while True:
                page = reader(limit=200, offset=offset)  # type: ignore[operator]
                records += [(label, item.model_dump_json()) for item in page]
                if len(page) < 200:
                    break
                offset += 200
        records += [(f"variable {v.name}", v.model_dump_json()) for v in client.read_variables()]
    return records


def test_no_secret_value_appears_anywhere_but_its_0600_file(platform: LocalPlatform) -> None:
    values = {**SEEN, **every_secret_value(platform)}
    assert len(values) >= 9, sorted(values)

    leaks = [
        f"{label} holds {what}"
        for label, text in prefect_records()
        for what, value in values.items()
        if value in text
    ]
    secrets_dir = platform.state_dir / "secrets"
    engine_config = platform.state_dir / "pgbackrest" / "pgbackrest.conf"
    assert any(what.startswith("backups.cipher_pass") for what in values)
    state_root = platform.state_dir.parent
    for folder, _, files in os.walk(state_root):
        for name in files:
            path = Path(folder) / name
            if path.is_symlink() or not path.is_file():
                continue
            data = path.read_bytes()
            found = [what for what, value in values.items() if value.encode() in data]
            # The secrets' files, and pgBackRest's config holding the repository's passphrase
            # (read by PostgreSQL's user for every WAL segment it archives).
            home = path.parent == secrets_dir or path == engine_config
            intended = home and stat.S_IMODE(path.stat().st_mode) == 0o600
            if found and not intended:
                leaks.append(f"{path} holds {', '.join(found)}")
    home_token = Path.home() / ".vault-token"
    if home_token.exists() and home_token.read_text().strip() == values["root token"]:
        leaks.append(f"{home_token} holds the root token")
    assert leaks == []


def test_a_vault_admin_token_is_never_taken_from_a_prefect_block(
    prefect_server: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whoever can read the control plane's blocks must not hold an environment's Vault: the
    bootstrap takes an admin token only from the operator's file at run time."""
    from prefect.blocks.system import Secret

    from tasks.vault import ADMIN_TOKEN_FILE_VARIABLE, admin_session

    monkeypatch.delenv(ADMIN_TOKEN_FILE_VARIABLE, raising=False)
    Secret(value="s.an-admin-token").save("vault-admin-token-staging", overwrite=True)
    assert admin_session(load_environment("staging")) is None
