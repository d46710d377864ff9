"""Small JSON-lines files the receiver keeps for `socialnet-ops status`: the alert inbox
(webhooks/alerts.py) and the deliveries that started nothing for a reason a person should see.

Each file keeps only its newest lines, so it stays small however long the receiver runs.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from socialnet_ops.core.paths import state_root

logger = logging.getLogger("socialnet.webhooks")

KEEP_NOTICES = 50
_lock = threading.Lock()


def append_bounded(path: Path, record: dict[str, Any], keep: int) -> None:
    """Appends `record` as one JSON line, keeping the newest `keep` lines (atomic replace)."""
    with _lock:
        lines = path.read_text().splitlines() if path.exists() else []
        lines = [*lines[-(keep - 1) :], json.dumps(record)]
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text("\n".join(lines) + "\n")
        temporary.replace(path)


def read_newest(path: Path, newest: int) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines()[-newest:]:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def notices_file() -> Path:
    """SOCIALNET_WEBHOOK_NOTICES_FILE, else in the control plane's folder: the control plane
    gives its programs SOCIALNET_STATE_DIR, so the receiver and `status` agree on it."""
    value = os.environ.get("SOCIALNET_WEBHOOK_NOTICES_FILE")
    return Path(value) if value else state_root() / "control-plane" / "webhook-notices.jsonl"


def record_notice(event: str, delivery: str | None, code: int, reply: dict[str, Any]) -> None:
    """Keeps an authenticated delivery the receiver did not honour: refused (the promotion
    gate), ignored for a reason the setup can fix, or invalid (4xx). Never fails the reply."""
    notice = {
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "event": event[:60],
        "delivery": delivery,
        "code": code,
        "status": reply.get("status", "invalid"),
        "reason": str(reply.get("reason") or reply.get("error") or "")[:500],
    }
    try:
        append_bounded(notices_file(), notice, KEEP_NOTICES)
    except OSError as error:
        logger.warning("cannot keep the delivery notice in %s: %s", notices_file(), error)


def recent_notices(newest: int = 5) -> list[dict[str, Any]]:
    return read_newest(notices_file(), newest)
