"""OpenAPI details shared by the routes, so the document matches what the API really does."""

from __future__ import annotations

from typing import Any

from app.api.schemas import ErrorMessage


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        401: "Missing, malformed, tampered or expired access token",
        403: "Not allowed for this user",
        404: "Not found",
        409: "Conflict",
        429: "Too many failed logins for this account or address; retry after Retry-After",
    }
    responses: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorMessage, "description": descriptions[code]} for code in codes
    }
    if 429 in responses:
        responses[429]["headers"] = {
            "Retry-After": {
                "description": "Seconds until the next attempt may be made",
                "schema": {"type": "integer", "minimum": 1},
            }
        }
    return responses


# Reads that work anonymously but personalise (liked_by_me, followed_by_me) when a token is sent:
# FastAPI appends this empty requirement to HTTPBearer, which OpenAPI reads as "auth optional".
OPTIONAL_AUTH: dict[str, Any] = {"security": [{}]}
