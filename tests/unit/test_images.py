"""Image references, the engine's fallback and what a container of the app is started with."""

from __future__ import annotations

from pathlib import Path

import pytest

from socialnet_ops.adapters import images
from socialnet_ops.core.environments import load_environment
from socialnet_ops.core.network import is_loopback
from socialnet_ops.platforms.local.runtime import AppRuntime

pytestmark = pytest.mark.unit

DIGEST = "sha256:" + "ab" * 32


def test_a_digest_reference_splits_into_registry_repository_and_digest() -> None:
    assert images.split_digest_reference(f"127.0.0.1:5000/socialnet-api@{DIGEST}") == (
        "127.0.0.1:5000",
        "socialnet-api",
        DIGEST,
    )
    assert images.split_digest_reference(f"registry.example/team/socialnet-api@{DIGEST}") == (
        "registry.example",
        "team/socialnet-api",
        DIGEST,
    )


@pytest.mark.parametrize("reference", ["127.0.0.1:5000/socialnet-api:v1", "socialnet-api@sha256:x"])
def test_a_reference_not_pinned_by_digest_is_refused(reference: str) -> None:
    with pytest.raises(images.ImageError, match="not pinned by digest"):
        images.split_digest_reference(reference)


def test_a_container_binds_nothing_but_what_its_command_says() -> None:
    command = images.container_command(
        f"127.0.0.1:5000/socialnet-api@{DIGEST}",
        "socialnet-local-api-stable-v1-1",
        ["uvicorn", "app.api.main:app", "--host", "127.0.0.1", "--port", "8001"],
        env={"SOCIALNET_TRACK": "stable"},
        mounts={Path("/srv/secrets"): "/run/secrets/socialnet"},
        labels={"socialnet.environment": "local"},
    )
    assert command[:2] == ["podman", "run"]
    assert {"--network=host", "--read-only", "--no-healthcheck", "--pull=never"} <= set(command)
    assert "/srv/secrets:/run/secrets/socialnet:ro" in command
    assert command[command.index(f"127.0.0.1:5000/socialnet-api@{DIGEST}") + 1 :] == [
        "uvicorn", "app.api.main:app", "--host", "127.0.0.1", "--port", "8001",
    ]  # fmt: skip


def _runtime(tmp_path: Path, runtime: str) -> AppRuntime:
    local = load_environment("local")
    settings = local.platform.model_copy(update={"runtime": runtime})
    return AppRuntime("local", tmp_path, settings)  # type: ignore[arg-type]


def test_processes_chosen_in_the_environment_are_said_in_status(tmp_path: Path) -> None:
    assert _runtime(tmp_path, "processes").describe() == (
        "processes: platform.runtime is processes in the environment"
    )


def test_without_a_container_engine_the_platform_says_which_tool_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no podman, buildah, runc or registry here
    images.engine_problem.cache_clear()
    try:
        described = _runtime(tmp_path, "containers").describe()
    finally:
        images.engine_problem.cache_clear()
    assert described.startswith("processes: no registry: docker-registry missing"), described
    monkeypatch.setattr(images, "REGISTRY_BINARY", "sh")  # a registry, but still no engine
    (tmp_path / "sh").symlink_to("/bin/sh")
    images.engine_problem.cache_clear()
    try:
        described = _runtime(tmp_path, "containers").describe()
    finally:
        images.engine_problem.cache_clear()
    assert described == (
        "processes: no container engine: podman, buildah, runc missing "
        "(apt-get install podman buildah runc docker-registry)"
    )


@pytest.mark.parametrize(
    ("address", "here"),
    [
        ("127.0.0.1:5000", True),
        ("localhost:5000", True),
        ("http://[::1]:9000", True),
        ("http://127.0.0.1:9000/bucket", True),
        ("registry.socialnet.example/socialnet", False),
        ("https://s3.eu-west-3.amazonaws.com", False),
        ("", False),
    ],
)
def test_only_a_registry_on_this_machine_is_spoken_to_without_tls(address: str, here: bool) -> None:
    assert is_loopback(address) is here
