"""Sign up, log in, profiles and tokens, against a real PostgreSQL."""

from __future__ import annotations

import time

import jwt
import pytest
from fastapi.testclient import TestClient

from app.api.core.config import Settings
from app.api.main import create_app
from tests.integration.api.conftest import (
    PASSWORD,
    TOKEN_SECRET,
    Member,
    error_fields,
    sign_up,
    unique_username,
)

pytestmark = pytest.mark.integration


def test_sign_up_returns_the_new_profile(client: TestClient) -> None:
    username = unique_username("carol")
    response = client.post(
        "/api/users", json={"username": username, "password": PASSWORD, "display_name": "Carol"}
    )
    assert response.status_code == 201
    profile = response.json()
    assert profile["username"] == username
    assert profile["display_name"] == "Carol"
    assert profile["bio"] == ""
    assert (profile["followers"], profile["following"], profile["followed_by_me"]) == (0, 0, False)
    assert "password" not in str(profile)


def test_display_name_defaults_to_the_username(client: TestClient) -> None:
    member = sign_up(client)
    profile = client.get("/api/users/me", headers=member.headers).json()
    assert profile["display_name"] == member.username


def test_duplicate_username_is_a_conflict(client: TestClient, alice: Member) -> None:
    response = client.post("/api/users", json={"username": alice.username, "password": PASSWORD})
    assert response.status_code == 409
    assert response.json() == {"detail": "username already taken"}


def test_usernames_are_one_account_whatever_their_case(client: TestClient) -> None:
    typed = unique_username("MixedCase")
    created = client.post("/api/users", json={"username": typed, "password": PASSWORD})
    assert created.status_code == 201
    for variant in (typed.lower(), typed.upper()):
        response = client.post("/api/users", json={"username": variant, "password": PASSWORD})
        assert response.status_code == 409, variant
    # Logging in and profiles take any case; the name is shown as it was typed at sign-up.
    member = Member(client, typed.lower())
    assert client.get("/api/users/me", headers=member.headers).json()["username"] == typed
    assert client.get(f"/api/users/{typed.upper()}").json()["username"] == typed


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"username": "x", "password": PASSWORD}, "body.username"),
        ({"username": "has space", "password": PASSWORD}, "body.username"),
        ({"username": "a" * 31, "password": PASSWORD}, "body.username"),
        ({"username": "nul\x00name", "password": PASSWORD}, "body.username"),
        ({"username": "valid_name", "password": "short"}, "body.password"),
        ({"username": "valid_name", "password": "p" * 129}, "body.password"),
        (
            {"username": "valid_name", "password": PASSWORD, "display_name": "d\x00"},
            "body.display_name",
        ),
        (
            {"username": "valid_name", "password": PASSWORD, "display_name": "d" * 51},
            "body.display_name",
        ),
        ({"username": "valid_name"}, "body.password"),
        ({"username": "valid_name", "password": PASSWORD, "admin": True}, "body.admin"),
    ],
)
def test_invalid_sign_up_names_the_field(
    client: TestClient, body: dict[str, object], field: str
) -> None:
    reasons = error_fields(client.post("/api/users", json=body))
    assert field in reasons, reasons
    assert reasons[field]


def test_login_issues_a_bearer_token(client: TestClient, alice: Member) -> None:
    response = client.post(
        "/api/auth/token", json={"username": alice.username, "password": PASSWORD}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 3600
    claims = jwt.decode(body["access_token"], TOKEN_SECRET, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 3600


@pytest.mark.parametrize("who", ["wrong password", "unknown user"])
def test_bad_credentials_are_unauthorized(client: TestClient, alice: Member, who: str) -> None:
    username = alice.username if who == "wrong password" else "nobody_here"
    password = "wrong password!" if who == "wrong password" else PASSWORD
    response = client.post("/api/auth/token", json={"username": username, "password": password})
    assert response.status_code == 401
    assert response.json() == {"detail": "incorrect username or password"}
    assert response.headers["www-authenticate"] == "Bearer"


def test_profile_update_changes_only_given_fields(client: TestClient, alice: Member) -> None:
    response = client.patch(
        "/api/users/me", headers=alice.headers, json={"bio": "hello <b>world</b>"}
    )
    assert response.status_code == 200
    assert response.json()["bio"] == "hello <b>world</b>"
    response = client.patch(
        "/api/users/me", headers=alice.headers, json={"display_name": "Alice A."}
    )
    assert (response.json()["display_name"], response.json()["bio"]) == (
        "Alice A.",
        "hello <b>world</b>",
    )
    assert "body.bio" in error_fields(
        client.patch("/api/users/me", headers=alice.headers, json={"bio": "b" * 301})
    )


def test_profiles_count_followers_and_tell_who_follows(
    client: TestClient, alice: Member, bob: Member
) -> None:
    assert (
        client.post(f"/api/users/{bob.username}/follow", headers=alice.headers).status_code == 204
    )
    seen_by_alice = client.get(f"/api/users/{bob.username}", headers=alice.headers).json()
    assert (seen_by_alice["followers"], seen_by_alice["followed_by_me"]) == (1, True)
    anonymous = client.get(f"/api/users/{bob.username}").json()
    assert (anonymous["followers"], anonymous["followed_by_me"]) == (1, False)
    assert client.get("/api/users/me", headers=alice.headers).json()["following"] == 1


def test_unknown_profile_is_404_and_malformed_name_is_422(client: TestClient) -> None:
    assert client.get("/api/users/nobody_at_all").status_code == 404
    assert "path.username" in error_fields(client.get("/api/users/bad%00name"))
    assert "path.username" in error_fields(client.get("/api/users/" + "a" * 300))


class TestTokens:
    def test_me_requires_a_token(self, client: TestClient) -> None:
        response = client.get("/api/users/me")
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"

    @pytest.mark.parametrize(
        "token",
        [
            "not-a-jwt",
            "a.b.c",
            "",
            "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.",  # alg=none must never be accepted
            "\u00e9\u00e9\u00e9",
        ],
    )
    def test_malformed_tokens_are_rejected(self, client: TestClient, token: str) -> None:
        headers = {"Authorization": f"Bearer {token}".encode()}
        assert client.get("/api/users/me", headers=headers).status_code == 401

    def test_tampered_token_is_rejected(self, client: TestClient, alice: Member) -> None:
        header, payload, signature = alice.token.split(".")
        flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
        response = client.get(
            "/api/users/me", headers={"Authorization": f"Bearer {header}.{payload}.{flipped}"}
        )
        assert response.status_code == 401

    def test_token_signed_with_another_key_is_rejected(
        self, client: TestClient, alice: Member
    ) -> None:
        claims = jwt.decode(alice.token, TOKEN_SECRET, algorithms=["HS256"])
        forged = jwt.encode(claims, "some-other-key-of-sufficient-length!!", algorithm="HS256")
        response = client.get("/api/users/me", headers={"Authorization": f"Bearer {forged}"})
        assert response.status_code == 401

    def test_expired_token_is_rejected(self, client: TestClient, alice: Member) -> None:
        claims = jwt.decode(alice.token, TOKEN_SECRET, algorithms=["HS256"])
        claims.update(iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)
        expired = jwt.encode(claims, TOKEN_SECRET, algorithm="HS256")
        response = client.get("/api/users/me", headers={"Authorization": f"Bearer {expired}"})
        assert response.status_code == 401
        assert response.json() == {"detail": "invalid or expired token"}

    def test_token_of_an_unknown_user_is_rejected(self, client: TestClient) -> None:
        ghost = jwt.encode(
            {"sub": "999999999", "exp": int(time.time()) + 60}, TOKEN_SECRET, algorithm="HS256"
        )
        assert (
            client.get("/api/users/me", headers={"Authorization": f"Bearer {ghost}"}).status_code
            == 401
        )

    def test_logout_revokes_the_callers_tokens(self, client: TestClient) -> None:
        member = sign_up(client, "leaving")
        other_device = Member(client, member.username)
        assert client.post("/api/auth/logout", headers=member.headers).status_code == 204
        for headers in (member.headers, other_device.headers):
            response = client.get("/api/users/me", headers=headers)
            assert response.status_code == 401
            assert response.json() == {"detail": "invalid or expired token"}
            assert client.post("/api/auth/logout", headers=headers).status_code == 401
        # Logging in again gives a token that works.
        again = Member(client, member.username)
        assert client.get("/api/users/me", headers=again.headers).status_code == 200

    def test_tokens_of_the_release_before_generations_work_until_logout(
        self, client: TestClient
    ) -> None:
        member = sign_up(client, "upgraded")
        claims = jwt.decode(member.token, TOKEN_SECRET, algorithms=["HS256"])
        del claims["gen"]
        older = {"Authorization": f"Bearer {jwt.encode(claims, TOKEN_SECRET, algorithm='HS256')}"}
        assert client.get("/api/users/me", headers=older).status_code == 200
        assert client.post("/api/auth/logout", headers=member.headers).status_code == 204
        assert client.get("/api/users/me", headers=older).status_code == 401

    def test_logout_leaves_other_users_signed_in(
        self, client: TestClient, alice: Member, bob: Member
    ) -> None:
        assert client.post("/api/auth/logout", headers=alice.headers).status_code == 204
        assert client.get("/api/users/me", headers=bob.headers).status_code == 200

    def test_previous_key_is_accepted_after_rotation(
        self, api_settings: Settings, alice: Member
    ) -> None:
        rotated = api_settings.model_copy(
            update={
                "token_secret": type(api_settings.db_password)(
                    "rotated-token-secret-0123456789abcdef"
                ),
                "token_secret_previous": type(api_settings.db_password)(TOKEN_SECRET),
            }
        )
        with TestClient(create_app(rotated)) as rotated_client:
            old_token_response = rotated_client.get("/api/users/me", headers=alice.headers)
            assert old_token_response.status_code == 200
            fresh = Member(rotated_client, alice.username)
            claims = jwt.decode(
                fresh.token, "rotated-token-secret-0123456789abcdef", algorithms=["HS256"]
            )
            assert claims["sub"]
        # Once the overlap ends, tokens signed with the retired key stop working.
        without_previous = rotated.model_copy(update={"token_secret_previous": None})
        with TestClient(create_app(without_previous)) as strict_client:
            assert strict_client.get("/api/users/me", headers=alice.headers).status_code == 401
