"""Fixtures shared across suites. Keep suite-specific fixtures next to their tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.git_remote import (  # noqa: F401
    git_remote,
    project_repo,
    project_seed,
    project_source,
)
from tests.support.postgres import PostgresServer, PostgresUnavailableError
from tests.support.requirements import unavailable


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL for the whole session; suites create their own databases in it."""
    try:
        server = PostgresServer().start()
    except PostgresUnavailableError as error:
        unavailable(str(error))
    yield server
    server.destroy()


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadfile`, with the files of a platform-sharing package on one worker."""
    if config.getvalue("dist") != "loadfile":
        return None
    from tests.support.scheduling import SharedFixtureScheduling

    return SharedFixtureScheduling(config, log)
