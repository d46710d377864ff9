"""Health, readiness, version, Prometheus metrics, fault injection and the static front."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.api.core.db import migration_head
from app.api.main import create_app
from tests.integration.api.conftest import migrate, settings_for, sign_up
from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.integration

OPS_PATHS = ("/healthz", "/readyz", "/version", "/metrics")


def samples(client: TestClient, name: str) -> list[tuple[dict[str, str], float]]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == name
    ]


def test_healthz_and_version(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/version").json() == {
        "version": "1.2.3",
        "git_sha": "abc1234",
        "track": "stable",
    }


def test_readyz_when_migrated(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "migration": migration_head(), "reason": None}


def test_readyz_is_503_until_migrations_reach_head(postgres_server: PostgresServer) -> None:
    postgres_server.create_database("ops_not_migrated")
    with TestClient(create_app(settings_for(postgres_server, "ops_not_migrated"))) as client:
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["status"] == "unavailable"
        assert "migrations not at head" in response.json()["reason"]
        migrate(postgres_server, "ops_not_migrated")
        assert client.get("/readyz").status_code == 200
    postgres_server.drop_database("ops_not_migrated")


@pytest.fixture
def own_server() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


def test_readyz_follows_the_database_down_and_back(own_server: PostgresServer) -> None:
    own_server.create_database("socialnet")
    migrate(own_server, "socialnet")
    settings = settings_for(own_server, "socialnet", db_connect_timeout_s=2)
    with TestClient(create_app(settings)) as client:
        assert client.get("/readyz").status_code == 200
        own_server.stop()
        down = client.get("/readyz")
        assert down.status_code == 503
        assert down.json()["reason"].startswith("database unreachable")
        # API calls report the outage as 503, not as a crash.
        assert client.get("/api/users/someone").status_code == 503
        assert client.get("/healthz").status_code == 200
        own_server.start()
        assert client.get("/readyz").status_code == 200
        assert client.get("/api/users/someone").status_code == 404


def test_metrics_count_requests_by_route_template(client: TestClient) -> None:
    member = sign_up(client, "metered")
    for _ in range(3):
        client.get("/api/posts/424242")
    client.get(f"/api/users/{member.username}")
    client.get("/definitely/not/a/route/12345")

    requests = samples(client, "http_requests_total")
    by_labels = {tuple(sorted(labels.items())): value for labels, value in requests}
    missing_post = (
        ("method", "GET"),
        ("route", "/api/posts/{post_id}"),
        ("status", "404"),
        ("track", "stable"),
        ("version", "1.2.3"),
    )
    assert by_labels[missing_post] == 3
    routes = {labels["route"] for labels, _ in requests}
    assert "/api/users/{username}" in routes
    assert "<unmatched>" in routes
    assert not any(route.startswith("/definitely") or member.username in route for route in routes)

    durations = samples(client, "http_request_duration_seconds_count")
    assert any(
        labels
        == {"route": "/api/posts/{post_id}", "method": "GET", "version": "1.2.3", "track": "stable"}
        and value == 3
        for labels, value in durations
    )
    assert "status" not in durations[0][0]
    assert samples(client, "http_request_duration_seconds_bucket")


def test_metrics_expose_database_pool_gauges(client: TestClient) -> None:
    client.get("/readyz")
    for name in ("db_pool_size", "db_pool_checked_out", "db_pool_checked_in", "db_pool_overflow"):
        values = samples(client, name)
        assert values, name
    assert samples(client, "db_pool_size")[0][1] == 10


class TestFaultInjection:
    def test_error_rate_answers_that_share_of_api_requests_with_500(
        self, postgres_server: PostgresServer, api_database: str
    ) -> None:
        settings = settings_for(postgres_server, api_database, fault_error_rate=0.3, track="canary")
        with TestClient(create_app(settings)) as client:
            statuses = [client.get("/api/users/nobody_here").status_code for _ in range(400)]
            assert set(statuses) == {404, 500}
            share = statuses.count(500) / len(statuses)
            # 400 draws at p=0.3: the standard deviation is 0.023, so +-0.08 is beyond 3 sigma.
            assert 0.22 <= share <= 0.38, share
            counted = {
                labels["status"]: value
                for labels, value in samples(client, "http_requests_total")
                if labels["route"] == "/api/users/{username}"
            }
            assert counted["500"] == statuses.count(500)
            assert all(
                labels["track"] == "canary" for labels, _ in samples(client, "http_requests_total")
            )

    def test_operations_endpoints_are_never_faulted(
        self, postgres_server: PostgresServer, api_database: str
    ) -> None:
        settings = settings_for(
            postgres_server, api_database, fault_error_rate=1.0, fault_latency_ms=300
        )
        with TestClient(create_app(settings)) as client:
            started = time.perf_counter()
            for path in OPS_PATHS * 5:
                assert client.get(path).status_code == 200, path
            assert time.perf_counter() - started < 20 * 0.3 / 2
            assert client.get("/api/users/nobody_here").status_code == 500

    def test_latency_is_added_to_api_requests(
        self, postgres_server: PostgresServer, api_database: str
    ) -> None:
        settings = settings_for(postgres_server, api_database, fault_latency_ms=250)
        with TestClient(create_app(settings)) as client:
            started = time.perf_counter()
            assert client.get("/api/users/nobody_here").status_code == 404
            assert time.perf_counter() - started >= 0.25
            started = time.perf_counter()
            client.get("/healthz")
            assert time.perf_counter() - started < 0.25

    def test_faults_are_off_by_default(self, client: TestClient) -> None:
        assert {client.get("/api/users/nobody_here").status_code for _ in range(100)} == {404}


def test_front_is_served_at_root_after_the_api(
    postgres_server: PostgresServer, api_database: str, tmp_path: Path
) -> None:
    (tmp_path / "index.html").write_text("<!doctype html><title>socialnet</title>")
    (tmp_path / "app.js").write_text("console.log('hi')")
    with TestClient(
        create_app(settings_for(postgres_server, api_database, front_dir=tmp_path))
    ) as client:
        assert "socialnet" in client.get("/").text
        assert client.get("/app.js").status_code == 200
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/api/users/nobody_here").status_code == 404
        assert client.get("/openapi.json").status_code == 200
