"""Which runs a spare engine may start, and the environment a run is handed."""

from __future__ import annotations

import os
import sys
import uuid

import pytest
from prefect.client.schemas.objects import FlowRun
from prefect.utilities.processutils import command_to_string

from socialnet_ops.control.worker import EngineSpares, run_environment, spares_enabled

pytestmark = pytest.mark.unit

ENGINE = command_to_string([sys.executable, "-m", "prefect.engine"])


def test_spares_are_on_unless_turned_off() -> None:
    assert spares_enabled({})
    assert spares_enabled({"SOCIALNET_WORKER_SPARE": "1"})
    for off in ("0", "false", "No "):
        assert not spares_enabled({"SOCIALNET_WORKER_SPARE": off})


def test_a_spare_stands_in_only_for_this_interpreter_s_engine_command() -> None:
    spares = EngineSpares()
    assert spares.serves(ENGINE, os.environ)
    assert not spares.serves(None, os.environ)
    assert not spares.serves(f"{sys.executable} -X utf8 -m prefect.engine", os.environ)
    assert not spares.serves("/usr/bin/python3 -m prefect.engine", os.environ)
    assert not spares.serves(f"{sys.executable} -m my.engine", os.environ)


def test_a_run_with_its_own_python_settings_is_not_given_a_spare(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PYTHONOPTIMIZE", raising=False)
    spares = EngineSpares()
    # The interpreter read PYTHON* variables when the spare started: a run needing others waits
    # for an interpreter of its own.
    assert not spares.serves(ENGINE, {**os.environ, "PYTHONOPTIMIZE": "2"})
    assert spares.serves(
        ENGINE, {**os.environ, "SOCIALNET_PROBE": "any", "PREFECT_LOGGING_LEVEL": "DEBUG"}
    )


def test_the_run_environment_is_the_engine_command_s(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOCIALNET_FROM_WORKER", "worker")
    flow_run = FlowRun(id=uuid.uuid4(), flow_id=uuid.uuid4(), name="probe")
    environment = run_environment(
        flow_run,
        {"SOCIALNET_FROM_JOB": "job", "SOCIALNET_DROPPED": None, "PREFECT__DEPLOYMENT_NAME": "d"},
        {"PREFECT__CONTROL_PORT": "4100", "PREFECT__CONTROL_TOKEN": "t"},
    )
    assert environment["PREFECT__FLOW_RUN_ID"] == str(flow_run.id)
    assert environment["SOCIALNET_FROM_WORKER"] == "worker"
    assert environment["SOCIALNET_FROM_JOB"] == "job"
    assert "SOCIALNET_DROPPED" not in environment
    assert environment["PREFECT__CONTROL_PORT"] == "4100"
    assert environment["PREFECT__DEPLOYMENT_NAME"] == "d"
    assert environment["PREFECT__ENABLE_CANCELLATION_AND_CRASHED_HOOKS"] == "false"
    assert all(isinstance(value, str) for value in environment.values())
