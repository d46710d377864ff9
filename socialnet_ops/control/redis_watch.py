"""Restart Prefect's services once Redis restarts: a supervisord event listener of the control plane.

Prefect's messaging consumers reconnect to Redis by themselves, but the background task worker of
`prefect-services` (docket, in Prefect 3.9) does not come back from a Redis restart: the
automations' actions (the rollback, the alerts, crashing zombie runs) stop running while
everything else looks healthy. So when supervisord reports Redis RUNNING again and the services
process is already running, this listener restarts it (seconds; the API servers keep serving
and nothing is lost: Redis keeps its streams in its append-only file).

Written by hand: supervisord's event protocol is a few lines over `supervisor.childutils`, and no
tool restarts one program when another restarts.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from supervisor import childutils

WATCHED = "redis"
RESTARTED = "prefect-services"


def restart_after_redis(rpc: Any, payload: str) -> str | None:
    """What to do for one PROCESS_STATE_RUNNING event: restart the services after Redis's start."""
    fields = childutils.get_headers(payload.split("\n", 1)[0])
    if fields.get("processname") != WATCHED:
        return None
    if rpc.supervisor.getProcessInfo(RESTARTED)["statename"] != "RUNNING":
        return None  # the first start: the services start after Redis anyway
    rpc.supervisor.stopProcess(RESTARTED, True)
    rpc.supervisor.startProcess(RESTARTED, False)
    return f"{WATCHED} restarted: {RESTARTED} restarted so its background worker reconnects"


def main() -> None:
    rpc = childutils.getRPCInterface(os.environ)
    while True:
        _headers, payload = childutils.listener.wait(sys.stdin, sys.stdout)
        try:
            done = restart_after_redis(rpc, payload)
        except Exception as error:  # never die: supervisord would restart us, the event is lost
            done = f"could not restart {RESTARTED}: {error}"
        if done:
            print(done, file=sys.stderr, flush=True)
        childutils.listener.ok(sys.stdout)


if __name__ == "__main__":
    main()
