"""Test support: a real distribution (v2) registry on 127.0.0.1, and images built for a test."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from socialnet_ops.adapters import images
from socialnet_ops.core.paths import repo_root
from tests.support.postgres import free_port
from tests.support.processes import running_process
from tests.support.requirements import unavailable
from tests.support.waiting import wait_for


def require_containers() -> None:
    """Skip without a working container engine; under CI, fail."""
    if shutil.which(images.REGISTRY_BINARY) is None:
        unavailable(f"{images.REGISTRY_BINARY} missing ({images.INSTALL_HINT})")
    problem = images.engine_problem()
    if problem:
        unavailable(problem)


@contextmanager
def running_registry(folder: Path) -> Iterator[str]:
    """A registry storing under `folder`; yields its address `127.0.0.1:<port>`."""
    port = free_port()
    config = folder / "registry.yml"
    folder.mkdir(parents=True, exist_ok=True)
    config.write_text(images.registry_config(folder / "data", port))
    with running_process(
        [images.REGISTRY_BINARY, "serve", str(config)], None, folder / "registry.log"
    ):
        address = f"127.0.0.1:{port}"
        wait_for(lambda: _answers(address), 20, f"registry {address}")
        yield address


def _answers(address: str) -> bool:
    import httpx

    try:
        return httpx.get(f"http://{address}/v2/", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def app_context(folder: Path) -> Path:
    """A copy of the project's `app/` under `folder`, as a release's files hold it."""
    shutil.copytree(
        repo_root() / "app", folder / "app", ignore=shutil.ignore_patterns("__pycache__")
    )
    return folder
