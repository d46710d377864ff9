"""probe: where and how fast the control plane runs a flow (which host, which worker process).

The smallest complete run: the drills use it to prove a worker (on this machine or another
host) runs flows, and the control_plane_scale benchmark counts runs per minute with it.
"""

from __future__ import annotations

import os
import socket
import time

from prefect import flow

from socialnet_ops.core.results import ProbeResult


@flow(name="probe", flow_run_name="probe-{label}", retries=0)
def probe(label: str = "check", wait_seconds: float = 0.0) -> ProbeResult:
    """Answers the host name and address the run saw, and its process.

    `wait_seconds` (at most 60): the run waits first, as runs waiting on something outside do (a
    rollout, a backup): what a worker's capacity, not the machine's CPU, limits.
    """
    time.sleep(min(max(wait_seconds, 0.0), 60.0))
    host = socket.gethostname()
    try:
        address = socket.gethostbyname(host)
    except OSError:
        address = ""
    return ProbeResult(label=label, host=host, address=address, pid=os.getpid())
