"""Static file server for the web front on the local platform.

    python -m app.front.server --host 127.0.0.1 --port 8080

Serves ``app/front/static`` with explicit content types and security headers, plus ``GET /healthz``.
The edge (HAProxy) routes ``/api`` to the API and everything else here, so the front and the API
share one origin. In containers nginx plays this part (see ``app/front/Dockerfile``).
"""

from __future__ import annotations

import argparse
import mimetypes
import os
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from app.api.core.headers import SecurityHeaders

STATIC_DIR = Path(__file__).resolve().parent / "static"

# The host's /etc/mime.types may be missing or dated; ES modules must come as JavaScript.
for _type, _ext in (
    ("text/html", ".html"),
    ("text/javascript", ".js"),
    ("text/css", ".css"),
    ("image/svg+xml", ".svg"),
    ("application/json", ".json"),
):
    mimetypes.add_type(_type, _ext)

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    # File names are not content-hashed: always revalidate (ETag / Last-Modified make it cheap).
    (b"cache-control", b"no-cache"),
]


async def healthz(_: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


def create_app(static_dir: Path = STATIC_DIR) -> ASGIApp:
    """The front as an ASGI app: /healthz plus the static files (``/`` serves index.html)."""
    if not (static_dir / "index.html").is_file():
        raise FileNotFoundError(f"{static_dir}: no index.html; point --static-dir at the front")
    app = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET", "HEAD"]),
            Mount("/", app=StaticFiles(directory=static_dir, html=True), name="static"),
        ]
    )
    return SecurityHeaders(app, lambda _status, _content_type: SECURITY_HEADERS)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the socialnet web front.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--static-dir",
        type=Path,
        default=Path(os.environ.get("SOCIALNET_FRONT_DIR", STATIC_DIR)),
        help="folder holding index.html (default: $SOCIALNET_FRONT_DIR or the bundled front)",
    )
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--no-access-log", action="store_true")
    args = parser.parse_args(argv)
    uvicorn.run(
        create_app(args.static_dir.resolve()),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=not args.no_access_log,
        server_header=False,
    )


if __name__ == "__main__":
    main()
