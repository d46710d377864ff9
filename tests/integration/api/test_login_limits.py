"""Failed logins are limited per account and per client address (429 with Retry-After)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.api.main import create_app
from tests.integration.api.conftest import PASSWORD, settings_for, sign_up
from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.integration

WRONG = "not the password"


@pytest.fixture
def limited(postgres_server: PostgresServer, api_database: str) -> Iterator[Any]:
    """Opens clients on one app with lowered limits; `peer` is the address the API sees."""
    settings = settings_for(
        postgres_server,
        api_database,
        login_failures_per_account=3,
        login_failures_per_address=5,
        trusted_proxies="127.0.0.1",
    )
    app = create_app(settings)

    def client(peer: str = "192.0.2.10") -> TestClient:
        return TestClient(app, client=(peer, 40000))

    yield client
    app.state.engine.dispose()


def log_in(client: TestClient, username: str, password: str, **headers: str) -> Any:
    return client.post(
        "/api/auth/token", json={"username": username, "password": password}, headers=headers
    )


def assert_held_back(response: Any, window_s: int = 60) -> None:
    assert response.status_code == 429, response.text
    assert 1 <= int(response.headers["retry-after"]) <= window_s
    detail = response.json()["detail"]
    assert detail.startswith("too many failed logins") and "\n" not in detail


def test_an_account_is_held_back_after_its_failures_even_with_the_right_password(
    limited: Any,
) -> None:
    client = limited()
    member = sign_up(client, "guessed")
    for _ in range(3):
        assert log_in(client, member.username, WRONG).status_code == 401
    # The same account under another case and from another address is the same account.
    assert_held_back(log_in(limited("198.51.100.20"), member.username.upper(), PASSWORD))
    assert_held_back(log_in(client, member.username, PASSWORD))
    # Another account from the same address still logs in.
    other = sign_up(client, "bystander")
    assert log_in(client, other.username, PASSWORD).status_code == 200


def test_an_address_is_held_back_across_accounts(limited: Any) -> None:
    spraying = limited("192.0.2.30")
    member = sign_up(spraying, "sprayer_neighbour")
    for number in range(5):
        assert log_in(spraying, f"sprayed_{number}", WRONG).status_code == 401
    assert_held_back(log_in(spraying, member.username, PASSWORD))
    assert log_in(limited("192.0.2.31"), member.username, PASSWORD).status_code == 200


def test_the_trusted_edge_names_the_client(limited: Any) -> None:
    edge = limited("127.0.0.1")
    for number in range(5):
        response = log_in(edge, f"behind_{number}", WRONG, **{"X-Forwarded-For": "203.0.113.5"})
        assert response.status_code == 401
    assert_held_back(log_in(edge, "behind_9", WRONG, **{"X-Forwarded-For": "203.0.113.5"}))
    # Others behind the same edge are other clients; a forged hop before the edge's changes nothing.
    forged = {"X-Forwarded-For": "203.0.113.6, 203.0.113.5"}
    assert_held_back(log_in(edge, "behind_9", WRONG, **forged))
    assert log_in(edge, "behind_9", WRONG, **{"X-Forwarded-For": "203.0.113.6"}).status_code == 401


def test_an_untrusted_peer_cannot_pick_its_address(limited: Any) -> None:
    direct = limited("192.0.2.40")
    for number in range(5):
        forged = {"X-Forwarded-For": f"203.0.113.{100 + number}"}
        assert log_in(direct, f"forger_{number}", WRONG, **forged).status_code == 401
    assert_held_back(log_in(direct, "forger_9", WRONG, **{"X-Forwarded-For": "203.0.113.200"}))


def test_429_is_in_the_openapi_document(limited: Any) -> None:
    operation = limited().get("/openapi.json").json()["paths"]["/api/auth/token"]["post"]
    assert "Retry-After" in operation["responses"]["429"]["headers"]
