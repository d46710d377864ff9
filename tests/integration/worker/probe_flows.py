"""Flows the worker suite's deployments run: each reports, from inside its run, how it was started."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from prefect import flow
from prefect.runtime import flow_run
from prefect.settings import get_current_settings


def _started_at() -> float:
    """This process's start (epoch seconds), from /proc: boot time + start ticks."""
    ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
    boot = next(
        float(line.split()[1])
        for line in Path("/proc/stat").read_text().splitlines()
        if line.startswith("btime ")
    )
    return boot + ticks / os.sysconf("SC_CLK_TCK")


@flow(name="worker-probe")
def report(report_file: str, hold_s: float = 0.0) -> None:
    """Write the process's command, start time, directory, environment and settings as seen here."""
    cmdline = Path("/proc/self/cmdline").read_bytes().split(b"\0")
    Path(report_file).write_text(
        json.dumps(
            {
                "pid": os.getpid(),
                "command": [part.decode() for part in cmdline if part],
                "started_at": _started_at(),
                "cwd": os.getcwd(),
                "cwd_on_path": os.getcwd() in sys.path,
                "flow_run_id": flow_run.id,
                "environment_flow_run_id": os.environ.get("PREFECT__FLOW_RUN_ID"),
                "probe": os.environ.get("SOCIALNET_PROBE"),
                "heartbeat_frequency": get_current_settings().flows.heartbeat_frequency,
            }
        )
    )
    time.sleep(hold_s)


@flow(name="worker-probe-crash")
def crash(exit_code: int) -> None:
    """A run whose process dies under the engine, as an out-of-memory kill would do."""
    os._exit(exit_code)
