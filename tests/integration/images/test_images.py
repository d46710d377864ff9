"""The app's images, built with buildah from a release's files, pushed to a real registry and run."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from socialnet_ops.adapters import images
from tests.support.postgres import free_port
from tests.support.registry import app_context, require_containers, running_registry
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

COMMIT = "0123456789abcdef0123456789abcdef01234567"
SOURCE = "http://127.0.0.1/socialnet.git"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    require_containers()
    with running_registry(tmp_path_factory.mktemp("registry")) as address:
        yield address


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The app's files, made unique to this run: images of the same files are reused as built."""
    folder = app_context(tmp_path_factory.mktemp("release"))
    (folder / "app" / "api" / "build-marker.txt").write_text(secrets.token_hex(8))
    return folder


@pytest.fixture(scope="module")
def built(registry: str, context: Path) -> dict[str, images.BuiltImage]:
    labels = images.oci_labels("v1", COMMIT, SOURCE)
    return {
        image.component: image for image in images.build_and_push(context, registry, "v1", labels)
    }


@contextmanager
def running(
    reference: str, name: str, command: list[str], mounts: dict[Path, str] | None = None
) -> Iterator[None]:
    engine = images.ContainerEngine()
    engine.pull(reference)
    argv = images.container_command(reference, name, command, mounts=mounts)
    process = subprocess.Popen(argv, env={**os.environ, **engine.env})
    try:
        yield
    finally:
        engine.remove_container(name)
        process.wait(timeout=30)


def _get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return None


def test_images_are_pushed_by_digest_and_the_registry_knows_them(
    built: dict[str, images.BuiltImage], registry: str
) -> None:
    assert set(built) == {"api", "front"}
    for image in built.values():
        registry_of, repository, _digest = images.split_digest_reference(image.reference)
        assert registry_of == registry and repository == f"socialnet-{image.component}"
        assert images.in_registry(image.reference)
        assert 0 < image.size_mb < 400
    assert not images.in_registry(f"{registry}/socialnet-api@sha256:{'0' * 64}")


def test_images_carry_their_commit_source_and_creation_time(
    built: dict[str, images.BuiltImage],
) -> None:
    labels = images.ContainerEngine().labels(images.ContainerEngine().pull(built["api"].reference))
    assert labels["org.opencontainers.image.revision"] == COMMIT
    assert labels["org.opencontainers.image.source"] == SOURCE
    assert labels["org.opencontainers.image.version"] == "v1"
    assert labels["org.opencontainers.image.created"].startswith("20")


def test_the_api_runs_from_its_digest_as_a_non_root_user(
    built: dict[str, images.BuiltImage],
) -> None:
    port = free_port()
    reference = built["api"].reference
    command = ["uvicorn", "app.api.main:app", "--host", "127.0.0.1", "--port", str(port)]
    with running(reference, "socialnet-test-api", command):
        answer = wait_for(lambda: _get(f"http://127.0.0.1:{port}/healthz"), 60, "the API container")
        assert answer.status_code == 200
        user = images.ContainerEngine().output("podman", "exec", "socialnet-test-api", "id", "-u")
        assert user == "10001"
        # The root file system is read-only: the app cannot rewrite itself.
        denied = subprocess.run(
            ["podman", "exec", "socialnet-test-api", "touch", "/srv/app/x"],
            capture_output=True,
            text=True,
            env={**os.environ, **images.ContainerEngine().env},
        )
        assert denied.returncode != 0 and "Read-only file system" in denied.stderr


def test_the_front_serves_its_pages_on_the_port_it_is_given(
    built: dict[str, images.BuiltImage], tmp_path: Path
) -> None:
    port = free_port()
    listen = tmp_path / "listen.conf"
    listen.write_text(f"listen 127.0.0.1:{port};\n")
    with running(
        built["front"].reference,
        "socialnet-test-front",
        ["nginx", "-g", "daemon off;"],
        {listen: "/etc/nginx/front-listen.conf"},
    ):
        health = wait_for(
            lambda: _get(f"http://127.0.0.1:{port}/healthz"), 30, "the front container"
        )
        assert json.loads(health.text) == {"status": "ok"}
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
        assert page.status_code == 200 and "<html" in page.text.lower()
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        user = images.ContainerEngine().output("podman", "exec", "socialnet-test-front", "id", "-u")
        assert user == "101"


def _layers(reference: str) -> list[str]:
    return list(
        json.loads(
            images.ContainerEngine().output(
                "podman", "image", "inspect", "--format", "{{json .RootFS.Layers}}", reference
            )
        )
    )


def test_images_of_unchanged_files_are_reused_as_they_are(
    built: dict[str, images.BuiltImage], registry: str, context: Path
) -> None:
    again = {
        image.component: image
        for image in images.build_and_push(
            context, registry, "v1-again", images.oci_labels("v1-again", COMMIT, SOURCE)
        )
    }
    assert again["api"].reference == built["api"].reference
    assert again["front"].reference == built["front"].reference


def test_an_app_only_change_reuses_the_dependency_layers(
    built: dict[str, images.BuiltImage], registry: str, context: Path
) -> None:
    main = context / "app" / "api" / "main.py"
    main.write_text(main.read_text() + "\n# an app-only change\n")
    labels = images.oci_labels("v2", COMMIT, SOURCE)
    engine = images.ContainerEngine()
    api = images.COMPONENTS[0]
    rebuilt = engine.build(context, api, "v2", labels)
    before, after = _layers(engine.pull(built["api"].reference)), _layers(rebuilt)
    assert before != after
    # Everything up to the app's own files (base, user, venv with its dependencies) is shared.
    shared = sum(1 for old, new in zip(before, after, strict=False) if old == new)
    assert shared >= len(before) - 2 and shared >= 3
