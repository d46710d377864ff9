"""The local alert inbox: `POST /hooks/alerts`, where the `socialnet-alerts` notification block
sends when no external alert webhook is configured (SOCIALNET_ALERT_WEBHOOK_URL).

Each alert is logged and appended to a JSON-lines file (SOCIALNET_ALERTS_FILE) that
`socialnet-ops status` reads; the file keeps the newest KEEP alerts. Loopback only, like the rest
of the control plane, and behind the same rules as `/hooks/gitlab` (webhooks/body.py): the
receiver's token in X-Gitlab-Token, a bounded body read within bounded time, a JSON object.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from webhooks.body import BodyRefused, check_token, json_object, read_body
from webhooks.records import append_bounded, read_newest
from webhooks.token import TokenSource

logger = logging.getLogger("socialnet.webhooks")

KEEP = 200
MAX_ALERT_BYTES = 64 * 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")


def alerts_file() -> Path | None:
    value = os.environ.get("SOCIALNET_ALERTS_FILE")
    return Path(value) if value else None


def read_alerts(path: Path, newest: int = 5) -> list[dict[str, Any]]:
    return read_newest(path, newest)


def record_alert(path: Path, alert: dict[str, Any]) -> None:
    append_bounded(path, alert, KEEP)


def one_line(text: str) -> str:
    """`text` with line breaks and other control characters escaped (`\\n`): whoever can send an
    alert must not be able to write a log line of their own."""
    return _CONTROL.sub(lambda found: found.group().encode("unicode_escape").decode(), text)


def alert_inbox(token: TokenSource) -> Callable[[Request], Awaitable[JSONResponse]]:
    async def receive_alert(request: Request) -> JSONResponse:
        refused = check_token(token, request)
        if refused is not None:
            return refused
        path = alerts_file()
        if path is None:
            return JSONResponse({"error": "no alert inbox configured (SOCIALNET_ALERTS_FILE)"}, 404)
        try:
            sent = json_object(await read_body(request, MAX_ALERT_BYTES))
        except BodyRefused as refusal:
            return refusal.reply
        alert = {
            "received_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "subject": str(sent.get("subject", ""))[:300],
            "body": str(sent.get("body", ""))[:2000],
        }
        record_alert(path, alert)
        logger.warning("ALERT %s: %s", one_line(alert["subject"]), one_line(alert["body"])[:300])
        return JSONResponse({"status": "recorded"}, 202)

    return receive_alert
