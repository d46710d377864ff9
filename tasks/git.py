"""The project's git source and the builds made from it."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext

from socialnet_ops.adapters.builds import (
    MANIFEST,
    build_identity,
    build_release,
    check_version,
    releases_dir,
)
from socialnet_ops.adapters.source import checkout
from socialnet_ops.core.release import Build, SourceTree


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
    build, reused = build_release(environment, version, source, runtime_env)
    verb = "reused" if reused else "built"
    logger.info("%s %s from %s (%s) at %s", verb, version, build.ref, build.git_sha, build.path)
    return build
