"""Fixtures of the integration suites: one real Prefect server for the whole session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prefect.testing.utilities import prefect_test_harness

from flows.common import ensure_release_limits


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """A real Prefect server (SQLite) with the `release-<env>` limits created, as at `make up`."""
    with prefect_test_harness(server_startup_timeout=120):
        ensure_release_limits()
        yield
