"""Authentication on every write, ownership, and hostile input stored inert."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

from app.api.core.config import Settings
from app.api.main import create_app
from tests.integration.api.conftest import Member, sign_up
from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.integration

PUBLIC_WRITES = {("post", "/api/users"), ("post", "/api/auth/token")}
SAMPLE_BODIES = {"/api/posts": {"text": "hi"}, "/api/posts/{post_id}/comments": {"text": "hi"}}

SQL_INJECTIONS = [
    "'; DROP TABLE posts; --",
    "' OR '1'='1",
    "1; DELETE FROM users WHERE 1=1; --",
    "\\'; TRUNCATE likes; --",
    "$$; DROP TABLE comments; $$",
    "Robert'); DROP TABLE users;--",
]
XSS_PAYLOADS = [
    "<script>alert('xss')</script>",
    '<img src=x onerror="alert(1)">',
    "javascript:alert(document.cookie)",
    "<svg/onload=alert(1)>",
    "&lt;b&gt; &amp; \"quotes\" 'single'",
]


def write_operations(client: TestClient) -> list[tuple[str, str]]:
    paths = client.app.openapi()["paths"]  # type: ignore[attr-defined]
    return [
        (method, path)
        for path, operations in paths.items()
        if path.startswith("/api/")
        for method in operations
        if method in {"post", "put", "patch", "delete"} and (method, path) not in PUBLIC_WRITES
    ]


def test_every_write_requires_a_token(client: TestClient, alice: Member) -> None:
    post_id = client.post("/api/posts", headers=alice.headers, json={"text": "target"}).json()["id"]
    operations = write_operations(client)
    assert len(operations) == 9, operations
    for method, template in operations:
        path = template.replace("{post_id}", str(post_id)).replace("{username}", alice.username)
        body = SAMPLE_BODIES.get(template, {})
        for headers in (
            {},
            {"Authorization": "Bearer not.a.token"},
            {"Authorization": "Basic YTpi"},
        ):
            response = client.request(method.upper(), path, json=body, headers=headers)
            assert response.status_code == 401, (method, template, headers, response.text)
    # Nothing was written by the unauthenticated attempts.
    assert client.get(f"/api/posts/{post_id}").json()["comment_count"] == 0
    assert client.get(f"/api/users/{alice.username}").json()["followers"] == 0


def test_others_posts_cannot_be_deleted(client: TestClient, alice: Member, bob: Member) -> None:
    post_id = client.post("/api/posts", headers=alice.headers, json={"text": "mine"}).json()["id"]
    assert client.delete(f"/api/posts/{post_id}", headers=bob.headers).status_code == 403
    assert client.get(f"/api/posts/{post_id}").json()["text"] == "mine"


@pytest.mark.parametrize("payload", SQL_INJECTIONS + XSS_PAYLOADS)
def test_hostile_text_is_stored_and_returned_verbatim(
    client: TestClient, alice: Member, payload: str
) -> None:
    created = client.post("/api/posts", headers=alice.headers, json={"text": payload})
    assert created.status_code == 201
    assert created.headers["content-type"] == "application/json"
    post_id = created.json()["id"]
    assert client.get(f"/api/posts/{post_id}").json()["text"] == payload
    comment = client.post(
        f"/api/posts/{post_id}/comments", headers=alice.headers, json={"text": payload}
    )
    assert comment.json()["text"] == payload
    profile = client.patch(
        "/api/users/me", headers=alice.headers, json={"display_name": payload[:50], "bio": payload}
    )
    assert (profile.json()["display_name"], profile.json()["bio"]) == (payload[:50], payload)


@pytest.mark.parametrize("payload", SQL_INJECTIONS)
def test_injection_in_names_and_credentials_finds_nothing(client: TestClient, payload: str) -> None:
    assert client.post(
        "/api/auth/token", json={"username": payload, "password": payload}
    ).status_code in {401, 422}
    assert client.get(f"/api/users/{payload}").status_code in {404, 422}
    assert client.get("/api/timeline", params={"cursor": payload}).status_code in {401, 422}


def test_tables_survive_the_payloads(
    client: TestClient, postgres_server: PostgresServer, api_database: str
) -> None:
    member = sign_up(client, "survivor")
    for payload in SQL_INJECTIONS:
        client.post("/api/posts", headers=member.headers, json={"text": payload})
    with psycopg.connect(postgres_server.dsn_for(api_database)) as connection:
        tables = {
            row[0]
            for row in connection.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            )
        }
        assert {"users", "posts", "likes", "comments", "follows", "alembic_version"} <= tables
        stored = connection.execute(
            "SELECT count(*) FROM posts p JOIN users u ON u.id = p.author_id WHERE u.username = %s",
            (member.username,),
        ).fetchone()
        assert stored == (len(SQL_INJECTIONS),)
        assert connection.execute("SELECT count(*) FROM users").fetchone()[0] > 1  # type: ignore[index]


def test_password_hash_never_leaves_the_server(client: TestClient, alice: Member) -> None:
    for path in ("/api/users/me", f"/api/users/{alice.username}"):
        body = client.get(path, headers=alice.headers).text
        assert "argon2" not in body
        assert "password" not in body


API_POLICY = "default-src 'none'; frame-ancestors 'none'"
FRONT = Path(__file__).resolve().parents[3] / "app/front/static"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/healthz", 200),
        ("GET", "/openapi.json", 200),
        ("GET", "/api/users/me", 401),
        ("GET", "/api/users/nobody_at_all", 404),
        ("GET", "/api/posts/not-a-number", 422),
        ("POST", "/api/auth/token", 422),
    ],
)
def test_every_answer_forbids_sniffing_framing_and_referrers(
    client: TestClient, method: str, path: str, status: int
) -> None:
    response = client.request(method, path)
    assert response.status_code == status
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-security-policy"] == API_POLICY
    assert response.headers["referrer-policy"] == "no-referrer"


def test_the_front_served_by_the_api_keeps_its_own_page_policy(api_settings: Settings) -> None:
    with TestClient(create_app(api_settings.model_copy(update={"front_dir": FRONT}))) as client:
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        # The page's meta tag allows its own scripts and styles; the header forbids framing it.
        assert "script-src 'self'" in page.text
        assert page.headers["content-security-policy"] == "frame-ancestors 'none'"
        assert page.headers["x-content-type-options"] == "nosniff"
        # Revalidating the kept page (a reload) must not replace its policy with the API's.
        revalidated = client.get("/", headers={"If-None-Match": page.headers["etag"]})
        assert revalidated.status_code == 304
        assert "content-security-policy" not in revalidated.headers
        script = client.get("/app.js")
        assert script.headers["content-security-policy"] == API_POLICY
        assert script.headers["x-content-type-options"] == "nosniff"
