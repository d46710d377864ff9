"""The control plane's process worker: Prefect's `ProcessWorker`, each run started by a spare engine.

Prefect's process worker starts `python -m prefect.engine` when a run is picked up, and that
interpreter spends 2-3 s of CPU importing Prefect before the run is Running (PrefectHQ/prefect#12619,
#21944). This worker keeps one engine process started ahead of time (`prestarted_engine`: the
imports done, waiting on stdin). A run is handed to it, with the working directory and environment
the engine command would have had, and the next spare is started. Everything else is Prefect's:
the executor, the state proposals, the control channel for cancellation, the process manager that
kills a run's process, the exit-code handling.

A spare stands in only for an engine command the pool configures (as the control plane's does),
for this interpreter and its Python environment; a pool without a command (Prefect then resolves
the deployment's workspace), a deployment with another `command`, or with `PYTHON*` variables of
its own, gets Prefect's own starter. `SOCIALNET_WORKER_SPARE=0` turns spares off.

Run as `python -m socialnet_ops.control.worker --pool NAME [--limit N] [--name NAME]`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
from prefect.flows import load_flow_from_flow_run
from prefect.runner._flow_run_executor import FlowRunExecutionResult, FlowRunExecutorContext
from prefect.runner._process_manager import ProcessHandle
from prefect.settings import get_current_settings
from prefect.utilities.processutils import (
    command_from_string,
    consume_process_output,
    sanitize_subprocess_env,
)
from prefect.workers.process import ProcessJobConfiguration, ProcessWorker, ProcessWorkerResult

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun
    from prefect.runner._control_channel import ControlChannel

SPARE_COMMAND = [sys.executable, "-m", "socialnet_ops.control.prestarted_engine"]


def engine_command() -> list[str]:
    return [sys.executable, "-m", "prefect.engine"]


def spares_enabled(environ: Mapping[str, str] = os.environ) -> bool:
    return environ.get("SOCIALNET_WORKER_SPARE", "1").strip().lower() not in {"0", "false", "no"}


def python_environment(environ: Mapping[str, str | None]) -> dict[str, str | None]:
    """The variables the interpreter reads at start-up, which a spare has already read."""
    return {key: value for key, value in environ.items() if key.startswith("PYTHON")}


class EngineSpares:
    """One engine process waiting for a run, replaced as soon as a run takes it."""

    def __init__(self) -> None:
        self._environment = dict(os.environ)
        self._python_environment = python_environment(self._environment)
        self._spare: anyio.abc.Process | None = None

    def serves(self, command: str | None, environment: Mapping[str, str | None]) -> bool:
        return (
            command is not None
            and command_from_string(command) == engine_command()
            and python_environment(environment) == self._python_environment
        )

    async def start(self) -> None:
        if self._spare is None:
            self._spare = await self._start_one()

    async def take(self) -> anyio.abc.Process:
        """The waiting spare (a fresh one if it has died), and the next spare started."""
        spare, self._spare = self._spare, None
        if spare is None or spare.returncode is not None:
            if spare is not None:
                await spare.aclose()
            spare = await self._start_one()
        self._spare = await self._start_one()
        return spare

    async def aclose(self) -> None:
        spare, self._spare = self._spare, None
        if spare is not None:
            # End of input is the spare's signal to leave; terminate covers one stuck importing.
            with contextlib.suppress(OSError):
                spare.terminate()
            with anyio.CancelScope(shield=True):
                await spare.aclose()

    async def _start_one(self) -> anyio.abc.Process:
        return await anyio.open_process(
            SPARE_COMMAND,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self._environment,
        )


def run_environment(
    flow_run: FlowRun, job_environment: Mapping[str, str | None], control: Mapping[str, str]
) -> dict[str, str]:
    """The environment Prefect's `EngineCommandStarter` gives `python -m prefect.engine`."""
    environment: dict[str, str | None] = {
        **os.environ,
        **job_environment,
        **get_current_settings().to_environment_variables(exclude_unset=True),
        "PREFECT__FLOW_RUN_ID": str(flow_run.id),
        "PREFECT__ENABLE_CANCELLATION_AND_CRASHED_HOOKS": "false",
        **control,
        "PREFECT__DEPLOYMENT_NAME": job_environment.get("PREFECT__DEPLOYMENT_NAME"),
    }
    return sanitize_subprocess_env(environment)


class SpareEngineStarter:
    """Prefect's `ProcessStarter` contract: signal the handle, then block until the run exits."""

    def __init__(
        self,
        spares: EngineSpares,
        *,
        working_dir: Path,
        environment: Mapping[str, str | None],
        stream_output: bool,
        control_channel: ControlChannel,
    ) -> None:
        self._spares = spares
        self._working_dir = working_dir
        self._environment = environment
        self._stream_output = stream_output
        self._control_channel = control_channel

    async def start(
        self,
        flow_run: FlowRun,
        task_status: anyio.abc.TaskStatus[ProcessHandle] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        control: dict[str, str] = {}
        with contextlib.suppress(RuntimeError):  # no loopback listener: kill-only cancellation
            port, token = self._control_channel.register(flow_run.id)
            control = {"PREFECT__CONTROL_PORT": str(port), "PREFECT__CONTROL_TOKEN": token}
        handoff = {
            "working_dir": str(self._working_dir),
            "environment": run_environment(flow_run, self._environment, control),
        }
        handed_off = False
        try:
            process = await self._spares.take()
            async with process:
                try:
                    assert process.stdin is not None
                    await process.stdin.send(json.dumps(handoff).encode() + b"\n")
                    await process.stdin.aclose()
                    handed_off = True
                    task_status.started(ProcessHandle(process))
                    sinks = (sys.stdout, sys.stderr) if self._stream_output else (None, None)
                    await consume_process_output(process, *sinks)
                    await process.wait()
                finally:
                    # As Prefect's own starter: a run abandoned by its worker does not live on.
                    with contextlib.suppress(OSError):
                        process.terminate()
        except BaseException:
            if control and not handed_off:
                self._control_channel.unregister(flow_run.id)
            raise


# The subclass keeps the `process` type: it serves process pools, and registers in their worker's
# place in this interpreter. Prefect warns about any such replacement; this one is intended.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"Type 'SpareEngineProcessWorker'")

    class SpareEngineProcessWorker(ProcessWorker):
        """`ProcessWorker` whose runs start in a spare engine process (see the module docstring)."""

        _spares: EngineSpares | None = None

        async def setup(self) -> None:
            await super().setup()
            if spares_enabled():
                self._spares = EngineSpares()
                await self._spares.start()

        async def teardown(self, *exc_info: Any) -> None:
            try:
                await super().teardown(*exc_info)
            finally:
                if self._spares is not None:
                    await self._spares.aclose()

        async def run(
            self,
            flow_run: FlowRun,
            configuration: ProcessJobConfiguration,
            task_status: anyio.abc.TaskStatus[int] | None = None,
        ) -> ProcessWorkerResult:
            spares = self._spares
            # Without a command of its own, Prefect resolves the deployment's workspace first.
            if (
                spares is None
                or not configuration._command_configured
                or not spares.serves(configuration.command, configuration.env)
            ):
                return await super().run(flow_run, configuration, task_status)
            # From here, ProcessWorker.run's engine-command branch with the spare's starter.
            task_status = task_status or anyio.TASK_STATUS_IGNORED
            working_dir_context = (
                contextlib.nullcontext(configuration.working_dir)
                if configuration.working_dir
                else tempfile.TemporaryDirectory(suffix="prefect")
            )
            execution: FlowRunExecutionResult | None = None
            with working_dir_context as working_dir, warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                async with FlowRunExecutorContext() as context:
                    starter = SpareEngineStarter(
                        spares,
                        working_dir=Path(working_dir).resolve(),
                        environment=configuration.env,
                        stream_output=configuration.stream_output,
                        control_channel=context.control_channel,
                    )
                    executor = context.create_executor(
                        flow_run,
                        starter,
                        resolve_flow=load_flow_from_flow_run,
                        propose_submitting=False,
                    )

                    async def execute(
                        *,
                        task_status: anyio.abc.TaskStatus[
                            ProcessHandle
                        ] = anyio.TASK_STATUS_IGNORED,
                    ) -> None:
                        nonlocal execution
                        execution = await executor.submit(task_status=task_status)

                    async with anyio.create_task_group() as task_group:
                        handle = await task_group.start(execute)
                        if handle.pid is None:
                            raise RuntimeError("Flow run process has no PID")
                        task_status.started(handle.pid)
            if execution is None or execution.status_code is None:
                raise RuntimeError("Failed to start flow run process.")
            return ProcessWorkerResult(
                status_code=execution.status_code, identifier=str(execution.handle.pid)
            )


async def serve(pool: str, limit: int | None, name: str | None, queues: list[str] | None) -> None:
    from prefect.settings import PREFECT_WORKER_HEARTBEAT_SECONDS, PREFECT_WORKER_PREFETCH_SECONDS

    worker = SpareEngineProcessWorker(
        name=name,
        work_pool_name=pool,
        work_queues=queues,
        limit=limit,
        prefetch_seconds=PREFECT_WORKER_PREFETCH_SECONDS.value(),
        heartbeat_interval_seconds=int(PREFECT_WORKER_HEARTBEAT_SECONDS.value()),
    )
    await worker.start(printer=print)


def main(argv: list[str] | None = None) -> None:
    from prefect.utilities.processutils import setup_signal_handlers_worker

    parser = argparse.ArgumentParser(
        prog="python -m socialnet_ops.control.worker", description=__doc__
    )
    parser.add_argument("--pool", required=True, help="the process work pool to poll")
    parser.add_argument("--limit", type=int, default=None, help="runs at once (default: no limit)")
    parser.add_argument("--name", default=None, help="the worker's name in the Prefect UI")
    parser.add_argument(
        "--work-queue",
        action="append",
        dest="queues",
        help="a queue of the pool to poll (repeatable; default: every queue)",
    )
    arguments = parser.parse_args(argv)
    # As `prefect worker start`: the first SIGTERM stops polling and lets runs finish.
    setup_signal_handlers_worker(os.getpid(), "the process worker", print)
    anyio.run(serve, arguments.pool, arguments.limit, arguments.name, arguments.queues)


if __name__ == "__main__":
    main()
