"""Follow graph, home timeline and keyset pagination."""

from __future__ import annotations

import psycopg
import pytest
from fastapi.testclient import TestClient

from tests.integration.api.conftest import Member, error_fields, sign_up
from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.integration


def post(client: TestClient, member: Member, text: str) -> int:
    response = client.post("/api/posts", headers=member.headers, json={"text": text})
    assert response.status_code == 201
    return int(response.json()["id"])


def timeline_texts(client: TestClient, member: Member) -> list[str]:
    response = client.get("/api/timeline", headers=member.headers)
    assert response.status_code == 200
    return [item["text"] for item in response.json()["items"]]


def all_pages(client: TestClient, path: str, member: Member, limit: int) -> list[dict[str, object]]:
    items: list[dict[str, object]] = []
    cursor: str | None = None
    for _ in range(1000):
        params: dict[str, str | int] = {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        response = client.get(path, headers=member.headers, params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= limit
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("pagination did not end")


def test_timeline_holds_own_and_followed_posts_newest_first(client: TestClient) -> None:
    reader, followed, stranger = (
        sign_up(client, "reader"),
        sign_up(client, "followed"),
        sign_up(client, "stranger"),
    )
    post(client, followed, "before follow")
    post(client, stranger, "never shown")
    assert (
        client.post(f"/api/users/{followed.username}/follow", headers=reader.headers).status_code
        == 204
    )
    post(client, reader, "mine")
    post(client, followed, "after follow")
    assert timeline_texts(client, reader) == ["after follow", "mine", "before follow"]

    assert (
        client.delete(f"/api/users/{followed.username}/follow", headers=reader.headers).status_code
        == 204
    )
    assert timeline_texts(client, reader) == ["mine"]


def test_follow_is_idempotent_and_checks_the_target(
    client: TestClient, alice: Member, bob: Member
) -> None:
    for _ in range(2):
        assert (
            client.post(f"/api/users/{bob.username}/follow", headers=alice.headers).status_code
            == 204
        )
    assert client.get(f"/api/users/{bob.username}").json()["followers"] == 1
    for _ in range(2):
        assert (
            client.delete(f"/api/users/{bob.username}/follow", headers=alice.headers).status_code
            == 204
        )
    assert client.get(f"/api/users/{bob.username}").json()["followers"] == 0
    assert client.post("/api/users/nobody_known/follow", headers=alice.headers).status_code == 404
    reasons = error_fields(
        client.post(f"/api/users/{alice.username}/follow", headers=alice.headers)
    )
    assert reasons["path.username"] == "cannot follow yourself"


def test_pagination_walks_many_posts_without_duplicates_or_gaps(
    client: TestClient, postgres_server: PostgresServer, api_database: str
) -> None:
    reader = sign_up(client, "pager")
    authors = [sign_up(client, "author") for _ in range(3)]
    for author in authors:
        client.post(f"/api/users/{author.username}/follow", headers=reader.headers)
    with psycopg.connect(postgres_server.dsn_for(api_database)) as connection:
        # 300 posts, many sharing one timestamp, so the id tie-break is what keeps pages stable.
        connection.execute(
            """
            INSERT INTO posts (author_id, text, created_at)
            SELECT u.id, 'bulk ' || n, timestamptz '2024-01-01' + ((n / 4) * interval '1 second')
            FROM generate_series(1, 300) AS n
            JOIN users u ON u.username = (%(authors)s::text[])[1 + n %% 3]
            """,
            {"authors": [author.username for author in authors]},
        )
        expected_ids = [
            row[0]
            for row in connection.execute(
                "SELECT p.id FROM posts p JOIN users u ON u.id = p.author_id"
                " WHERE u.username = ANY(%s) ORDER BY p.created_at DESC, p.id DESC",
                ([author.username for author in authors],),
            )
        ]
    assert len(expected_ids) == 300
    items = all_pages(client, "/api/timeline", reader, limit=7)
    assert [item["id"] for item in items] == expected_ids

    by_one_author = all_pages(client, f"/api/users/{authors[0].username}/posts", reader, limit=13)
    assert len(by_one_author) == 100
    assert {item["author"]["username"] for item in by_one_author} == {authors[0].username}  # type: ignore[index]


def test_posts_created_while_paging_do_not_shift_later_pages(
    client: TestClient, alice: Member
) -> None:
    ids = [post(client, alice, f"p{n}") for n in range(10)]
    first = client.get("/api/timeline", headers=alice.headers, params={"limit": 4}).json()
    post(client, alice, "arrived meanwhile")
    second = client.get(
        "/api/timeline", headers=alice.headers, params={"limit": 4, "cursor": first["next_cursor"]}
    ).json()
    assert [item["id"] for item in first["items"] + second["items"]] == ids[::-1][:8]


def test_last_page_has_no_cursor(client: TestClient, alice: Member) -> None:
    post(client, alice, "only one")
    page = client.get("/api/timeline", headers=alice.headers, params={"limit": 100}).json()
    assert page["next_cursor"] is None


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage",
        "!!!!",
        "a" * 129,
        "MjAyNC0wMS0wMXwx",
        "bm90LWEtZGF0ZXwx",
        "MjAyNC0wMS0wMVQwMDowMDowMCswMDowMHwtMQ",
        "\u00e9",
    ],
)
def test_malformed_cursor_is_422(client: TestClient, alice: Member, cursor: str) -> None:
    response = client.get("/api/timeline", headers=alice.headers, params={"cursor": cursor})
    assert "query.cursor" in error_fields(response)


@pytest.mark.parametrize("limit", ["0", "101", "-5", "99999999999999999999", "ten"])
def test_out_of_range_limit_is_422(client: TestClient, alice: Member, limit: str) -> None:
    assert "query.limit" in error_fields(
        client.get(f"/api/timeline?limit={limit}", headers=alice.headers)
    )


def test_user_posts_of_unknown_user_is_404(client: TestClient) -> None:
    assert client.get("/api/users/nobody_known/posts").status_code == 404
