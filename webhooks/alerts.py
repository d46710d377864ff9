"""The local alert inbox: `POST /hooks/alerts`, where the `socialnet-alerts` notification block
sends when no external alert webhook is configured (SOCIALNET_ALERT_WEBHOOK_URL).

Each alert is logged and appended to a JSON-lines file (SOCIALNET_ALERTS_FILE) that
`socialnet-ops status` reads; the file keeps the newest KEEP alerts. Loopback only, like the rest
of the control plane.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

logger = logging.getLogger("socialnet.webhooks")

KEEP = 200
MAX_ALERT_BYTES = 64 * 1024
_lock = threading.Lock()


def alerts_file() -> Path | None:
    value = os.environ.get("SOCIALNET_ALERTS_FILE")
    return Path(value) if value else None


def read_alerts(path: Path, newest: int = 5) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    alerts = []
    for line in path.read_text().splitlines()[-newest:]:
        try:
            alerts.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return alerts


def record_alert(path: Path, alert: dict[str, Any]) -> None:
    with _lock:
        lines = path.read_text().splitlines() if path.exists() else []
        lines = [*lines[-(KEEP - 1) :], json.dumps(alert)]
        temporary = path.with_suffix(".tmp")
        temporary.write_text("\n".join(lines) + "\n")
        temporary.replace(path)


async def receive_alert(request: Request) -> JSONResponse:
    path = alerts_file()
    if path is None:
        return JSONResponse({"error": "no alert inbox configured (SOCIALNET_ALERTS_FILE)"}, 404)
    body = await request.body()
    if len(body) > MAX_ALERT_BYTES:
        return JSONResponse({"error": f"alert larger than {MAX_ALERT_BYTES} bytes"}, 413)
    try:
        sent = json.loads(body)
    except json.JSONDecodeError as error:
        return JSONResponse({"error": f"body is not JSON: {error.msg} at {error.pos}"}, 400)
    if not isinstance(sent, dict):
        return JSONResponse({"error": "body must be a JSON object"}, 400)
    alert = {
        "received_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "subject": str(sent.get("subject", ""))[:300],
        "body": str(sent.get("body", ""))[:2000],
    }
    record_alert(path, alert)
    logger.warning("ALERT %s: %s", alert["subject"], alert["body"].replace("\n", " ")[:300])
    return JSONResponse({"status": "recorded"}, 202)
