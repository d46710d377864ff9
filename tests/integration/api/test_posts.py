"""Posts, likes and comments."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from tests.integration.api.conftest import Member, error_fields, sign_up

pytestmark = pytest.mark.integration


def create_post(client: TestClient, member: Member, text: str = "hello") -> dict[str, object]:
    response = client.post("/api/posts", headers=member.headers, json={"text": text})
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    return body


def test_create_and_read_a_post(client: TestClient, alice: Member) -> None:
    created = create_post(client, alice, "first post")
    assert created["text"] == "first post"
    assert created["author"] == {"username": alice.username, "display_name": alice.username}
    assert (created["like_count"], created["comment_count"], created["liked_by_me"]) == (
        0,
        0,
        False,
    )
    fetched = client.get(f"/api/posts/{created['id']}").json()
    assert fetched == created


def test_text_of_exactly_500_characters_is_accepted(client: TestClient, alice: Member) -> None:
    assert create_post(client, alice, "é" * 500)["text"] == "é" * 500


@pytest.mark.parametrize(
    ("text", "reason_part"),
    [
        ("x" * 501, "at most 500"),
        ("", "at least 1"),
        ("   \n ", "blank"),
        ("nul \x00 byte", "NUL"),
        ("lone \ud800 surrogate", "unicode"),
    ],
)
def test_invalid_post_text_is_422_naming_the_field(
    client: TestClient, alice: Member, text: str, reason_part: str
) -> None:
    response = client.post(
        "/api/posts",
        headers={**alice.headers, "Content-Type": "application/json"},
        # ensure_ascii sends NUL and lone surrogates as \\u escapes, as a hostile client would.
        content=json.dumps({"text": text}, ensure_ascii=True).encode(),
    )
    reasons = error_fields(response)
    assert reason_part in reasons["body.text"]


@pytest.mark.parametrize(
    "body", [b"not json", b"{}", b'{"text": 5}', b"[]", b'{"text": "ok", "extra": 1}']
)
def test_malformed_bodies_are_422(client: TestClient, alice: Member, body: bytes) -> None:
    response = client.post(
        "/api/posts", headers={**alice.headers, "Content-Type": "application/json"}, content=body
    )
    assert response.status_code == 422


@pytest.mark.parametrize(
    "post_id", ["0", "-1", "9223372036854775808", "99999999999999999999999", "abc"]
)
def test_out_of_range_post_ids_are_422(client: TestClient, post_id: str) -> None:
    assert "path.post_id" in error_fields(client.get(f"/api/posts/{post_id}"))


def test_largest_post_id_is_simply_not_found(client: TestClient) -> None:
    assert client.get("/api/posts/9223372036854775807").status_code == 404


def test_only_the_author_deletes_a_post(client: TestClient, alice: Member, bob: Member) -> None:
    post_id = create_post(client, alice)["id"]
    response = client.delete(f"/api/posts/{post_id}", headers=bob.headers)
    assert response.status_code == 403
    assert client.get(f"/api/posts/{post_id}").status_code == 200
    assert client.delete(f"/api/posts/{post_id}", headers=alice.headers).status_code == 204
    assert client.get(f"/api/posts/{post_id}").status_code == 404
    assert client.delete(f"/api/posts/{post_id}", headers=alice.headers).status_code == 404


def test_likes_are_counted_once_per_user(client: TestClient, alice: Member, bob: Member) -> None:
    post_id = create_post(client, alice)["id"]
    for member in (alice, bob, bob):
        assert client.post(f"/api/posts/{post_id}/like", headers=member.headers).status_code == 204
    seen_by_bob = client.get(f"/api/posts/{post_id}", headers=bob.headers).json()
    assert (seen_by_bob["like_count"], seen_by_bob["liked_by_me"]) == (2, True)
    assert client.delete(f"/api/posts/{post_id}/like", headers=bob.headers).status_code == 204
    assert client.delete(f"/api/posts/{post_id}/like", headers=bob.headers).status_code == 204
    seen_by_bob = client.get(f"/api/posts/{post_id}", headers=bob.headers).json()
    assert (seen_by_bob["like_count"], seen_by_bob["liked_by_me"]) == (1, False)
    assert client.get(f"/api/posts/{post_id}", headers=alice.headers).json()["liked_by_me"] is True


def test_liking_a_missing_post_is_404(client: TestClient, alice: Member) -> None:
    assert client.post("/api/posts/987654321/like", headers=alice.headers).status_code == 404
    assert client.delete("/api/posts/987654321/like", headers=alice.headers).status_code == 404


def test_comments_are_listed_oldest_first_and_counted(
    client: TestClient, alice: Member, bob: Member
) -> None:
    post_id = create_post(client, alice)["id"]
    for member, text in ((bob, "first!"), (alice, "thanks"), (bob, "again")):
        response = client.post(
            f"/api/posts/{post_id}/comments", headers=member.headers, json={"text": text}
        )
        assert response.status_code == 201
        assert response.json()["author"]["username"] == member.username
        assert response.json()["post_id"] == post_id
    comments = client.get(f"/api/posts/{post_id}/comments").json()
    assert [comment["text"] for comment in comments] == ["first!", "thanks", "again"]
    assert [c["text"] for c in client.get(f"/api/posts/{post_id}/comments?limit=1").json()] == [
        "first!"
    ]
    assert client.get(f"/api/posts/{post_id}").json()["comment_count"] == 3


def test_comment_validation_and_missing_post(client: TestClient, alice: Member) -> None:
    post_id = create_post(client, alice)["id"]
    assert "body.text" in error_fields(
        client.post(
            f"/api/posts/{post_id}/comments", headers=alice.headers, json={"text": "c" * 501}
        )
    )
    missing = client.post(
        "/api/posts/987654321/comments", headers=alice.headers, json={"text": "hi"}
    )
    assert missing.status_code == 404
    assert client.get("/api/posts/987654321/comments").status_code == 404


def test_deleting_a_post_removes_its_likes_and_comments(client: TestClient, alice: Member) -> None:
    bob = sign_up(client, "bob")
    post_id = create_post(client, alice)["id"]
    client.post(f"/api/posts/{post_id}/like", headers=bob.headers)
    client.post(f"/api/posts/{post_id}/comments", headers=bob.headers, json={"text": "hi"})
    assert client.delete(f"/api/posts/{post_id}", headers=alice.headers).status_code == 204
    assert client.get(f"/api/posts/{post_id}/comments").status_code == 404
