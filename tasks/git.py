"""The project's git source and the builds made from it."""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext

from socialnet_ops.adapters.builds import (
    MANIFEST,
    BuildError,
    build_identity,
    build_release,
    chart_version,
    check_version,
    load_build,
    pending_revisions,
    releases_dir,
)
from socialnet_ops.adapters.source import SourceRepository, checkout
from socialnet_ops.core.environments import load_environment
from socialnet_ops.core.ledger import ReleaseRecord
from socialnet_ops.core.release import Build, SourceTree
from socialnet_ops.core.results import text_diff
from socialnet_ops.platforms import platform_for


@task(name="checkout-source", cache_policy=NO_CACHE)
def checkout_source(ref: str | None, on: str | None = None) -> SourceTree:
    """Fetch the project's repository and extract `ref`'s tree (None: the working tree)."""
    source = checkout(ref, on)
    get_run_logger().info("reading %s from %s", source.describe(), source.root)
    return source


def _build_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """Same environment, version, commit and settings, and the build still stored: reuse it."""
    environment, version = parameters["environment"], parameters["version"]
    git_sha = build_identity(parameters["source"])
    manifest = releases_dir(environment) / check_version(version) / MANIFEST
    # Not stored (yet, or any more, e.g. another state folder): never a cache hit.
    stored = json.loads(manifest.read_text())["built_at"] if manifest.exists() else uuid.uuid4().hex
    settings = json.dumps(parameters.get("runtime_env") or {}, sort_keys=True)
    digest = hashlib.sha256(f"{manifest}|{git_sha}|{settings}|{stored}".encode()).hexdigest()[:16]
    return f"build-{environment}-{version}-{digest}"


@task(name="build-release", cache_key_fn=_build_cache_key, persist_result=True)
def build_release_task(
    environment: str,
    version: str,
    source: SourceTree,
    runtime_env: dict[str, str] | None = None,
) -> Build:
    logger = get_run_logger()
    registry = platform_for(load_environment(environment)).image_registry()
    build, reused = build_release(environment, version, source, runtime_env, registry, logger.info)
    verb = "reused" if reused else "built"
    logger.info("%s %s from %s (%s) at %s", verb, version, build.ref, build.git_sha, build.path)
    for component, reference in sorted(build.images.items()):
        logger.info("%s image: %s", component, reference)
    return build


@task(name="compare-commits", cache_policy=NO_CACHE)
def compare_commits(serving: str | None, commit: str) -> tuple[list[str], list[str]]:
    """(commits, changed paths) from what serves to `commit` (empty when unknown)."""
    if serving is None:
        return [], []
    repository = SourceRepository()
    return repository.commits_between(serving, commit), repository.changed_paths(serving, commit)


@task(name="compare-release-files", cache_policy=NO_CACHE)
def compare_release_files(
    environment: str, serving: ReleaseRecord | None, source: SourceTree, values_file: str | None
) -> dict[str, Any]:
    """The values diff, chart versions and pending migrations from what serves to `source`."""
    build = None
    if serving is not None:
        with contextlib.suppress(BuildError):
            build = load_build(environment, serving.version)
    old_root = build.path if build is not None else None
    old_values = new_values = None
    if values_file:
        new_values = _read(source.root / values_file)
        old_values = _read(old_root / values_file) if old_root else None
    old_chart = chart_version(old_root) if old_root else None
    new_chart = chart_version(source.root)
    head = serving.manifest.alembic_head if serving and serving.manifest else None
    return {
        "values_diff": text_diff(old_values, new_values, values_file or "values"),
        "chart": f"{old_chart or '-'} -> {new_chart or '-'}"
        if old_chart != new_chart
        else f"unchanged ({new_chart or '-'})",
        "migrations": pending_revisions(source.root, head),
    }


def _read(path: Path) -> str | None:
    return path.read_text() if path.is_file() else None


@task(name="fetch-source", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=10)
def fetch_source() -> str:
    """Bring the mirror of the project's repository up to date; the URL fetched."""
    repository = SourceRepository()
    repository.fetch()
    get_run_logger().info("fetched %s into %s", repository.url, repository.mirror)
    return repository.url
