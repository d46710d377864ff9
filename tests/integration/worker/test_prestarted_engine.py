"""The spare engine process on its own: it waits on stdin, leaves quietly when nobody hands it a
run, and becomes `python -m prefect.engine` with the environment it is handed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

SPARE = [sys.executable, "-m", "socialnet_ops.control.prestarted_engine"]


def test_without_a_hand_off_the_spare_leaves_quietly() -> None:
    result = subprocess.run(SPARE, input=b"", capture_output=True, timeout=60, check=False)
    assert result.returncode == 0
    assert result.stdout == b"" and result.stderr == b""


def test_the_spare_runs_the_engine_with_the_environment_it_is_handed(tmp_path: object) -> None:
    # The spare starts without a flow run id; the one handed over is the engine's (and invalid,
    # so the engine stops at once with its own error, naming what it received).
    environment = {**os.environ, "PREFECT__FLOW_RUN_ID": "not-a-flow-run-id"}
    environment.pop("PREFECT_API_URL", None)
    handoff = {"working_dir": str(tmp_path), "environment": environment}
    started = {key: value for key, value in os.environ.items() if key != "PREFECT__FLOW_RUN_ID"}
    result = subprocess.run(
        SPARE,
        input=json.dumps(handoff).encode() + b"\n",
        env=started,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stderr.decode()[-2000:]
    assert b"Invalid flow run id" in result.stderr + result.stdout
