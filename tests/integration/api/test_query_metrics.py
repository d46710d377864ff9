"""The API's own database metrics on /metrics, and the slow-query fault, on a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.api.main import create_app
from tests.integration.api.conftest import settings_for, sign_up
from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.integration

TABLES = {"users", "follows", "posts", "likes", "comments", "other"}
OPERATIONS = {"SELECT", "INSERT", "UPDATE", "DELETE", "OTHER"}

Labels = tuple[tuple[str, str], ...]


def db_samples(client: TestClient, name: str) -> dict[Labels, float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == name
    }


def key(**labels: str) -> Labels:
    return tuple(sorted(labels.items()))


def queries(
    client: TestClient, operation: str, table: str, status: str = "ok", track: str = "stable"
) -> float:
    counted = db_samples(client, "db_queries_total")
    return counted.get(
        key(operation=operation, table=table, status=status, version="1.2.3", track=track), 0
    )


@pytest.fixture
def app_client(postgres_server: PostgresServer, api_database: str) -> Iterator[TestClient]:
    """A fresh application (fresh metrics) on the module's database."""
    with TestClient(create_app(settings_for(postgres_server, api_database))) as client:
        yield client


def test_queries_are_counted_by_operation_and_main_table(app_client: TestClient) -> None:
    client = app_client
    alice = sign_up(client, "qm_alice")
    bob = sign_up(client, "qm_bob")
    assert queries(client, "INSERT", "users") == 2
    assert queries(client, "SELECT", "users") >= 2  # the token logins

    response = client.post("/api/posts", json={"text": "hello"}, headers=alice.headers)
    assert response.status_code == 201
    post_id = response.json()["id"]
    assert queries(client, "INSERT", "posts") == 1

    selects_on_posts = queries(client, "SELECT", "posts")
    assert client.get(f"/api/posts/{post_id}").status_code == 200
    assert client.get("/api/timeline", headers=alice.headers).status_code == 200
    assert queries(client, "SELECT", "posts") == selects_on_posts + 2

    follow = client.post(f"/api/users/{alice.username}/follow", headers=bob.headers)
    assert follow.status_code == 204
    assert queries(client, "INSERT", "follows") == 1
    assert client.post(f"/api/posts/{post_id}/like", headers=bob.headers).status_code == 204
    assert queries(client, "INSERT", "likes") == 1
    comment = client.post(
        f"/api/posts/{post_id}/comments", json={"text": "hi"}, headers=bob.headers
    )
    assert comment.status_code == 201
    assert queries(client, "INSERT", "comments") == 1
    assert client.get(f"/api/posts/{post_id}/comments").status_code == 200
    assert queries(client, "SELECT", "comments") == 1
    patch = client.patch("/api/users/me", json={"bio": "db metrics"}, headers=bob.headers)
    assert patch.status_code == 200
    assert queries(client, "UPDATE", "users") == 1
    assert client.delete(f"/api/posts/{post_id}", headers=alice.headers).status_code == 204
    assert queries(client, "DELETE", "posts") == 1
    # Operations endpoints read alembic_version, not an application table.
    assert client.get("/readyz").status_code == 200
    assert queries(client, "SELECT", "other") >= 1

    counted = db_samples(client, "db_queries_total")
    assert all(dict(labels)["table"] in TABLES for labels in counted)
    assert all(dict(labels)["operation"] in OPERATIONS for labels in counted)
    # The error series exist from the first query on (at 0), so error ratios are defined.
    assert all(value == 0 for labels, value in counted.items() if dict(labels)["status"] == "error")

    durations = db_samples(client, "db_query_duration_seconds_count")
    for labels, count in counted.items():
        if dict(labels)["status"] == "ok":
            without_status = tuple(item for item in labels if item[0] != "status")
            assert durations[without_status] == count
    buckets = {
        dict(labels)["le"]
        for labels in db_samples(client, "db_query_duration_seconds_bucket")
        if dict(labels)["table"] == "posts"
    }
    assert {"0.001", "0.25", "2.5", "+Inf"} <= buckets


def test_a_failing_query_is_counted_as_an_error(app_client: TestClient) -> None:
    client = app_client
    member = sign_up(client, "qm_duplicate")
    response = client.post(
        "/api/users", json={"username": member.username, "password": "correct horse battery"}
    )
    assert response.status_code == 409
    assert queries(client, "INSERT", "users", status="error") == 1
    assert queries(client, "INSERT", "users") == 1
    # The failed statement's time is observed too: one ok and one failed insert.
    durations = db_samples(client, "db_query_duration_seconds_count")
    assert durations[key(operation="INSERT", table="users", version="1.2.3", track="stable")] == 2

    # A like on a post that does not exist violates the foreign key.
    assert client.post("/api/posts/987654321/like", headers=member.headers).status_code == 404
    assert queries(client, "INSERT", "likes", status="error") == 1
    assert client.get("/metrics").status_code == 200
    # The pool gauges are still there beside the query metrics.
    assert db_samples(client, "db_pool_size")


def test_slow_query_fault_slows_the_selects_of_one_table_only(
    postgres_server: PostgresServer, api_database: str
) -> None:
    settings = settings_for(
        postgres_server, api_database, track="canary", fault_slow_query="posts:300"
    )
    with TestClient(create_app(settings)) as client:
        alice = sign_up(client, "qm_slow")
        response = client.post("/api/posts", json={"text": "slow"}, headers=alice.headers)
        assert response.status_code == 201
        assert client.get(f"/api/posts/{response.json()['id']}").status_code == 200
        assert client.get("/api/timeline", headers=alice.headers).status_code == 200

        buckets = db_samples(client, "db_query_duration_seconds_bucket")
        counts = db_samples(client, "db_query_duration_seconds_count")
        sums = db_samples(client, "db_query_duration_seconds_sum")

        def labels(table: str, operation: str = "SELECT") -> Labels:
            return key(operation=operation, table=table, version="1.2.3", track="canary")

        def under(table: str, le: str, operation: str = "SELECT") -> float:
            return buckets[tuple(sorted((*labels(table, operation), ("le", le))))]

        slow = labels("posts")
        assert counts[slow] >= 2
        assert under("posts", "0.25") == 0  # every SELECT on posts took at least 0.3 s
        assert sums[slow] >= 0.3 * counts[slow]
        # Other tables, and writes to posts, are not slowed.
        assert counts[labels("users")] >= 1
        assert under("users", "0.25") == counts[labels("users")]
        assert under("posts", "0.25", operation="INSERT") == counts[labels("posts", "INSERT")]
        assert queries(client, "SELECT", "posts", track="canary") == counts[slow]


def test_slow_query_fault_on_an_unknown_table_fails_start_up(
    postgres_server: PostgresServer, api_database: str
) -> None:
    settings = settings_for(postgres_server, api_database, fault_slow_query="postz:300")
    with pytest.raises(ValueError, match="unknown table 'postz'"):
        create_app(settings)
