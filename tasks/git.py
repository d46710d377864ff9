"""Release builds from git: the app at a ref (or the working tree), stored once per version."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from prefect import get_run_logger, task
from prefect.context import TaskRunContext

from socialnet_ops.adapters.builds import (
    MANIFEST,
    build_release,
    check_version,
    releases_dir,
    source_identity,
)
from socialnet_ops.platforms.base import Build


def _build_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """Same environment, version, commit and settings, and the build still stored: reuse it."""
    environment, version = parameters["environment"], parameters["version"]
    _, git_sha = source_identity(parameters.get("ref"))
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
    ref: str | None = None,
    runtime_env: dict[str, str] | None = None,
) -> Build:
    logger = get_run_logger()
    build, reused = build_release(environment, version, ref, runtime_env)
    verb = "reused" if reused else "built"
    logger.info("%s %s from %s (%s) at %s", verb, version, build.ref, build.git_sha, build.path)
    return build
