"""A flow-run process started before its run: `python -m prefect.engine` with the imports done.

Prefect's process worker starts a fresh interpreter for every run, and that interpreter spends
2-3 s of CPU importing Prefect before the run can be Running (PrefectHQ/prefect#12619). The worker
(`socialnet_ops.control.worker`) keeps one of these processes waiting: it has imported the engine and the
third-party libraries the flows use, and blocks on stdin. The worker writes one JSON line, the
run's working directory and complete environment, exactly what it would have given
`python -m prefect.engine`; this process takes them on and becomes that engine. Each run still has
a process of its own, and the repository's code (flows, tasks) is imported only after the hand-off,
so a run always executes the code checked out when it starts.

End of input without a hand-off (the worker stopped or died) ends the process quietly.
"""

from __future__ import annotations

import importlib
import json
import os
import runpy
import sys
from collections.abc import Mapping

# Third-party only, never the repository's modules (see above). Each is optional: a library a
# deployment does not install is simply not warmed.
WARM_MODULES = (
    "prefect.engine",
    "prefect.flow_engine",
    "prefect.flows",
    "prefect._internal.metrics",
    "prefect.deployments.steps.core",
    "boto3",
    "botocore.client",
    "psycopg",
    "requests",
    "hvac",
    "ansible_runner",
    "tenacity",
    "croniter",
)


def warm_up() -> None:
    for name in WARM_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            continue


def logging_environment(environ: Mapping[str, str]) -> dict[str, str]:
    return {key: value for key, value in environ.items() if key.startswith("PREFECT_LOGGING_")}


def become_engine(working_dir: str, environment: dict[str, str]) -> None:
    """Take on the run's directory and environment, then run `prefect.engine` as `-m` would."""
    from prefect.context import refresh_global_settings_context
    from prefect.logging.configuration import setup_logging

    logging_before = logging_environment(os.environ)
    os.chdir(working_dir)
    # `python -m` puts the working directory first on the path: the flow's entrypoint is
    # imported relative to it.
    sys.path[0] = os.getcwd()
    os.environ.clear()
    os.environ.update(environment)
    # Settings were read at import from the worker's environment; the run's may differ (the flow
    # run id, the control channel, the heartbeat, the pool's job variables).
    refresh_global_settings_context()
    if logging_environment(os.environ) != logging_before:
        setup_logging(incremental=False)
    runpy.run_module("prefect.engine", run_name="__main__", alter_sys=True)


def main() -> None:
    warm_up()
    line = sys.stdin.readline()
    if not line:
        return
    handoff = json.loads(line)
    sys.stdin.close()
    sys.stdin = open(os.devnull)  # noqa: SIM115 - the engine's stdin for the rest of the run
    become_engine(handoff["working_dir"], handoff["environment"])


if __name__ == "__main__":
    main()
