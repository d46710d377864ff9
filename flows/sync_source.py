"""sync-source: fetch the project's repository into the mirror, on a schedule.

Every run with a ref fetches at its start anyway; this keeps the mirror warm between pushes so
that fetch is small, and shows in the UI when the repository cannot be reached.
"""

from __future__ import annotations

from prefect import flow

from tasks.git import fetch_source


@flow(name="sync-source", flow_run_name="sync-source")
def sync_source() -> str:
    return fetch_source()
