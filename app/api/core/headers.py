"""Security headers on every answer: nothing to sniff, to frame, or to leak through the Referer."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from starlette.status import HTTP_304_NOT_MODIFIED
from starlette.types import ASGIApp, Message, Receive, Scope, Send

Headers = Sequence[tuple[bytes, bytes]]
COMMON: Headers = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]

# JSON loads nothing, runs nothing and is framed by no one.
API_POLICY = b"default-src 'none'; frame-ancestors 'none'"
# HTML pages bring their own policy: the front its meta tag (app/front/static/index.html), FastAPI's
# interactive docs their CDN scripts. The header only forbids framing them.
PAGE_POLICY = b"frame-ancestors 'none'"


def api_headers(status: int, content_type: bytes) -> Headers:
    # A 304's headers replace those of the answer the browser kept (a page with its policy), and
    # it has no content type to choose by: it keeps the policy the answer came with.
    if status == HTTP_304_NOT_MODIFIED:
        return COMMON
    policy = PAGE_POLICY if content_type.startswith(b"text/html") else API_POLICY
    return [*COMMON, (b"content-security-policy", policy)]


class SecurityHeaders:
    """Pure ASGI: adds `headers_for(status, content type)` to every HTTP answer, except those the
    answer already has. Also the front's local server's (app/front/server.py)."""

    def __init__(
        self, app: ASGIApp, headers_for: Callable[[int, bytes], Headers] = api_headers
    ) -> None:
        self.app = app
        self.headers_for = headers_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower(): value for name, value in headers}
                extra = self.headers_for(message["status"], present.get(b"content-type", b""))
                message["headers"] = [*headers, *((k, v) for k, v in extra if k not in present)]
            await send(message)

        await self.app(scope, receive, send_with_headers)
