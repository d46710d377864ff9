"""What a tool prints reaches the run's logs in Prefect, also from the threads that read its
pipes, and also when the flow runs the way the CLI runs it: in its own process, reporting to the
control plane through a settings context (`control_plane.connected`), not the process's settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from uuid import UUID

import pytest
from prefect.settings import PREFECT_API_URL

from flows.backup import backup
from tests.integration.backup.conftest import (
    Emulator,
    create_app_database,
    target_for,
    task_run_lines,
)
from tests.support.postgres import PostgresServer
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]

# socialnet_ops.control.cli._run_flow in short: the flow runs here, under the control plane's settings.
CLI_LIKE_RESTORE = """
import json, sys
from prefect.logging.handlers import APILogWorker
from flows.restore import restore
from socialnet_ops.control import control_plane
from socialnet_ops.core.backups import BackupTarget

target = BackupTarget.model_validate_json(sys.argv[1])
with control_plane.connected(json.loads(sys.argv[2])):
    state = restore(env="local", target=target, return_state=True)
    APILogWorker.drain_all(timeout=30)
print(json.dumps({"flow_run_id": str(state.state_details.flow_run_id), "failed": state.is_failed()}))
"""


def restore_as_the_cli_does(target_json: str, home: Path) -> dict[str, str]:
    api_url = str(PREFECT_API_URL.value())
    settings = {
        "PREFECT_API_URL": api_url,
        "PREFECT_UI_URL": api_url.removesuffix("/api"),
        "PREFECT_LOCAL_STORAGE_PATH": str(home / "storage"),
    }
    # The CLI's own environment knows no Prefect API: only the settings context does.
    env = {name: value for name, value in os.environ.items() if not name.startswith("PREFECT_")}
    env |= {"PREFECT_HOME": str(home), "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE": "false"}
    child = subprocess.run(
        [sys.executable, "-c", CLI_LIKE_RESTORE, target_json, json.dumps(settings)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    result: dict[str, str] = json.loads(child.stdout.strip().splitlines()[-1])
    return result


def test_pg_restore_s_error_on_a_corrupt_dump_is_in_the_restore_task_run_s_logs(
    prefect_server: None, postgres_server: PostgresServer, emulator: Emulator, tmp_path: Path
) -> None:
    create_app_database(postgres_server, "bk_logs", users=200)
    target = target_for(postgres_server, "bk_logs", emulator)
    taken = backup(env="local", target=target)
    s3 = emulator.client()
    body = s3.get_object(Bucket=target.store.bucket, Key=taken.key)["Body"].read()
    middle = len(body) // 2
    flipped = bytes(byte ^ 0xFF for byte in body[middle : middle + 64])
    s3.put_object(
        Bucket=target.store.bucket,
        Key=taken.key,
        Body=body[:middle] + flipped + body[middle + 64 :],
    )

    run = restore_as_the_cli_does(target.model_dump_json(), tmp_path / "prefect")

    assert run["failed"] is True
    error_line = "pg_restore: pg_restore: error: could not uncompress data"
    # Logs are written by the server as they arrive: allow it a moment.
    wait_for(
        lambda: any(
            line.startswith(error_line)
            for line in task_run_lines(UUID(run["flow_run_id"]), "restore-dump")
        ),
        timeout_s=15,
        what="pg_restore's error line in the restore-dump task run's logs",
    )
