"""Fixtures shared across suites. Keep suite-specific fixtures next to their tests."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.postgres import PostgresServer, PostgresUnavailableError


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL for the whole session; suites create their own databases in it."""
    try:
        server = PostgresServer().start()
    except PostgresUnavailableError as error:
        # In CI a missing PostgreSQL is a broken runner, never a reason to skip.
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(str(error))
        pytest.skip(str(error))
    yield server
    server.destroy()
