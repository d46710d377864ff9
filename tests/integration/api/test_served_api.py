"""The API started the way its image starts it (app/api/Dockerfile's CMD), seen on the wire."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import httpx
import pytest

from tests.integration.api.conftest import TOKEN_SECRET, database_env
from tests.support.postgres import PostgresServer, free_port
from tests.support.processes import running_process
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]


def image_command(port: int) -> list[str]:
    dockerfile = (REPO / "app/api/Dockerfile").read_text(encoding="utf-8")
    command: list[str] = json.loads(
        next(line for line in dockerfile.splitlines() if line.startswith("CMD ")).removeprefix(
            "CMD "
        )
    )
    assert command[0] == "uvicorn", command
    # Loopback and a free port instead of the container's 0.0.0.0:8000; every other option as is.
    command[command.index("--host") + 1] = "127.0.0.1"
    command[command.index("--port") + 1] = str(port)
    return [sys.executable, "-m", *command]


def answers_ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_answers_name_no_server_and_carry_the_security_headers(
    postgres_server: PostgresServer, api_database: str, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **os.environ,
        **database_env(postgres_server, api_database),
        "SOCIALNET_TOKEN_SECRET": TOKEN_SECRET,
        "SOCIALNET_VERSION": "1.2.3",
    }
    base = f"http://127.0.0.1:{port}"
    with running_process(image_command(port), env, tmp_path / "api.log", cwd=REPO) as api:
        wait_for(
            lambda: api.poll() is not None or answers_ready(f"{base}/readyz"),
            what=f"the API on port {port} ({tmp_path / 'api.log'})",
        )
        assert api.poll() is None, (tmp_path / "api.log").read_text()
        for path, status in (("/readyz", 200), ("/api/users/me", 401), ("/api/nothing", 404)):
            response = httpx.get(base + path, timeout=5)
            assert response.status_code == status, path
            assert "server" not in response.headers, path
            assert response.headers["x-content-type-options"] == "nosniff", path
            assert response.headers["content-security-policy"] == (
                "default-src 'none'; frame-ancestors 'none'"
            ), path
            assert response.headers["referrer-policy"] == "no-referrer", path
