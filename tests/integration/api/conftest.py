"""One migrated database per test module and an in-process client on the real application."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from alembic import command
from fastapi.testclient import TestClient

from app.api.core.config import Settings
from app.api.core.db import alembic_config
from app.api.main import create_app
from tests.support.postgres import PostgresServer

TOKEN_SECRET = "integration-test-token-secret-0123456789"
PASSWORD = "correct horse battery"


def settings_for(server: PostgresServer, database: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "db_host": server.host,
        "db_port": server.port,
        "db_name": database,
        "db_user": server.superuser,
        "db_password": "",
        "token_secret": TOKEN_SECRET,
        "version": "1.2.3",
        "git_sha": "abc1234",
        "track": "stable",
        "fault_error_rate": 0.0,
        "fault_latency_ms": 0,
        "front_dir": None,
    }
    values.update(overrides)
    return Settings(**values)


def database_env(server: PostgresServer, database: str) -> dict[str, str]:
    """The SOCIALNET_DB_* variables naming `database`, for the API or alembic as a process."""
    return {
        "SOCIALNET_DB_HOST": server.host,
        "SOCIALNET_DB_PORT": str(server.port),
        "SOCIALNET_DB_NAME": database,
        "SOCIALNET_DB_USER": server.superuser,
    }


def migrate(server: PostgresServer, database: str, revision: str = "head") -> None:
    config = alembic_config(server.sqlalchemy_url(database))
    config.attributes["configure_logging"] = False
    command.upgrade(config, revision)


@pytest.fixture(scope="module")
def api_database(request: pytest.FixtureRequest, postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, migrated database named after the test module."""
    name = "api_" + request.module.__name__.rsplit(".", 1)[-1]
    postgres_server.create_database(name)
    migrate(postgres_server, name)
    yield name
    postgres_server.drop_database(name)


@pytest.fixture(scope="module")
def api_settings(postgres_server: PostgresServer, api_database: str) -> Settings:
    return settings_for(postgres_server, api_database)


@pytest.fixture(scope="module")
def client(api_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(api_settings)) as test_client:
        yield test_client


_user_numbers = itertools.count(1)


def unique_username(prefix: str = "user") -> str:
    return f"{prefix}_{next(_user_numbers)}"


class Member:
    """A signed-up user with a token, for tests that act as someone."""

    def __init__(self, client: TestClient, username: str) -> None:
        self.username = username
        response = client.post("/api/auth/token", json={"username": username, "password": PASSWORD})
        assert response.status_code == 200, response.text
        self.token = response.json()["access_token"]
        self.headers = {"Authorization": f"Bearer {self.token}"}


def sign_up(client: TestClient, prefix: str = "user", display_name: str | None = None) -> Member:
    username = unique_username(prefix)
    body: dict[str, Any] = {"username": username, "password": PASSWORD}
    if display_name is not None:
        body["display_name"] = display_name
    response = client.post("/api/users", json=body)
    assert response.status_code == 201, response.text
    return Member(client, username)


@pytest.fixture
def alice(client: TestClient) -> Member:
    return sign_up(client, "alice")


@pytest.fixture
def bob(client: TestClient) -> Member:
    return sign_up(client, "bob")


def error_fields(response: Any) -> dict[str, str]:
    """422 body → {"body.text": "reason", ...}, to assert the field and the reason."""
    assert response.status_code == 422, response.text
    return {
        ".".join(str(part) for part in error["loc"]): error["msg"]
        for error in response.json()["detail"]
    }
