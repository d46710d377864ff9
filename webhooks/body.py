"""What every POST to the receiver goes through before its route looks at it: the token, a body of
bounded size read within bounded time, and a JSON object. Each refusal is one line naming the
problem.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from socialnet_ops.adapters.gitlab import GitLabConfigError
from webhooks.token import TokenSource

logger = logging.getLogger("socialnet.webhooks")

# GitLab sends a delivery in one go; a body still arriving after this long is a stuck or hostile
# client holding a connection and a task (uvicorn bounds only the wait for the headers).
BODY_SECONDS = 30.0


class BodyRefused(Exception):
    """The body cannot be taken; `reply` says why."""

    def __init__(self, reply: JSONResponse) -> None:
        super().__init__(bytes(reply.body).decode())
        self.reply = reply


def _refusal(code: int, error: str) -> BodyRefused:
    return BodyRefused(JSONResponse({"error": error}, status_code=code))


def check_token(token: TokenSource, request: Request) -> JSONResponse | None:
    """None when the request carries the receiver's token (X-Gitlab-Token), else the reply."""
    try:
        authorized = token.matches(request.headers.get("x-gitlab-token"))
    except (OSError, RuntimeError, GitLabConfigError) as error:
        logger.error("the webhook token cannot be read: %s", error)
        return JSONResponse({"error": "the receiver cannot read its token"}, status_code=503)
    if not authorized:
        return JSONResponse({"error": "missing or wrong X-Gitlab-Token"}, status_code=401)
    return None


async def read_body(request: Request, limit: int, seconds: float = BODY_SECONDS) -> bytes:
    """The body, refusing more than `limit` bytes: a larger Content-Length before reading a byte,
    and, since Content-Length may lie or be absent (chunked), while reading."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _refusal(413, f"body larger than {limit} bytes")
    body = bytearray()
    try:
        async with asyncio.timeout(seconds):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise _refusal(413, f"body larger than {limit} bytes")
    except TimeoutError:
        raise _refusal(408, f"body not received within {seconds:g} s") from None
    return bytes(body)


def json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object."""
    try:
        document = json.loads(body)
    except json.JSONDecodeError as error:
        raise _refusal(400, f"body is not valid JSON: {error}") from None
    except UnicodeDecodeError:
        raise _refusal(400, "body is not valid JSON: not UTF-8") from None
    except RecursionError:
        # json.loads recurses once per level: a few thousand levels exhaust the stack.
        raise _refusal(400, "body is not valid JSON: nested too deeply") from None
    if not isinstance(document, dict):
        raise _refusal(400, "body must be a JSON object")
    return document
