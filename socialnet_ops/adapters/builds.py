"""The release store: a build of one commit (or the working tree), made once and reused.

A build holds what is released together: the app, the Helm chart and the values of its commit,
and, where the platform has a registry, the app's images built from that commit's Dockerfiles and
pushed by digest (`images`).

A build lives under `.local/<env>/releases/<version>/` with a `build.json` manifest; reruns and
rollbacks reuse it. Creating it is atomic: it is assembled in a temporary folder and renamed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import yaml
from alembic.script import ScriptDirectory

from socialnet_ops.adapters import images
from socialnet_ops.adapters.files import copy_writable
from socialnet_ops.core.paths import environment_state_dir
from socialnet_ops.core.release import Build, SourceTree

VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MANIFEST = "build.json"
# What a release carries: the app's code (dependencies come from the project's locked venv), and
# the chart and values it is deployed with, so a rollback returns all three together.
SOURCE_FOLDERS = ("app",)
CHART = "infrastructure/helm/socialnet"
RELEASE_FOLDERS = ("app", CHART, "deployments/values")
ANSIBLE_ROLES = "infrastructure/ansible/roles"
MIGRATIONS = "app/api/migrations"


class BuildError(Exception):
    """A build that cannot be made or found; the message names the version, ref or path."""


def releases_dir(environment: str) -> Path:
    return environment_state_dir(environment) / "releases"


def check_version(version: str) -> str:
    if not VERSION.match(version):
        raise BuildError(
            f"version {version!r} is not valid: use letters, digits, '.', '_' or '-' (at most 64)"
        )
    return version


def _tree_digest(root: Path, folders: tuple[str, ...]) -> str:
    """sha256 over the paths and bytes of the files under `folders` of `root`."""
    digest = hashlib.sha256()
    for folder in folders:
        for path in sorted((root / folder).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(root)).encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()


def build_identity(source: SourceTree) -> str:
    """The commit a build is of, or `worktree-<digest>` for the working tree."""
    return source.sha or f"worktree-{_tree_digest(source.root, SOURCE_FOLDERS)[:12]}"


def _short(root: Path, *folders: str) -> str:
    return _tree_digest(root, folders)[:16]


def _alembic_head(migrations: Path) -> str | None:
    if not (migrations / "versions").is_dir():
        return None
    try:
        heads = ScriptDirectory(str(migrations)).get_heads()
    except Exception as error:  # a broken migration: the migrate step names it; say it here too
        return f"unreadable ({type(error).__name__})"
    return ",".join(sorted(heads)) or None


def chart_version(root: Path) -> str | None:
    chart = root / CHART / "Chart.yaml"
    return str(yaml.safe_load(chart.read_text()).get("version")) if chart.is_file() else None


def pending_revisions(root: Path, since: str | None) -> list[str]:
    """`<revision> <message>` of the migrations in `root` after head `since` (None: all)."""
    if not (root / MIGRATIONS / "versions").is_dir():
        return []
    script = ScriptDirectory(str(root / MIGRATIONS))
    known = {revision.revision for revision in script.walk_revisions()}
    base = since if since and all(head in known for head in since.split(",")) else "base"
    return [
        f"{revision.revision} {revision.doc or ''}".strip()
        for revision in script.walk_revisions(base=base, head="heads")
        if revision.revision not in (since or "").split(",")
    ]


def layer_digests(source: SourceTree, build: Path) -> dict[str, str]:
    """The build-time part of the release manifest: a digest per layer of the commit."""
    digests = {"app": _short(build, "app")}
    chart = build / CHART
    if (chart / "Chart.yaml").is_file():
        version = yaml.safe_load((chart / "Chart.yaml").read_text()).get("version", "?")
        digests["chart"] = f"{version}@{_short(build, str(CHART))}"
    for values in sorted((build / "deployments" / "values").glob("*.yaml")):
        digests[f"values:{values.name}"] = hashlib.sha256(values.read_bytes()).hexdigest()[:16]
    if (source.root / ANSIBLE_ROLES).is_dir():
        digests["ansible_roles"] = _short(source.root, ANSIBLE_ROLES)
    head = _alembic_head(build / MIGRATIONS)
    if head:
        digests["alembic_head"] = head
    return digests


def _export_source(source: SourceTree, destination: Path) -> None:
    """The release's files, copied writable (a commit's tree is read-only)."""
    for folder in RELEASE_FOLDERS:
        if (source.root / folder).is_dir():
            copy_writable(source.root / folder, destination / folder)


def _read_manifest(folder: Path) -> Build:
    manifest = json.loads((folder / MANIFEST).read_text())
    return Build(
        version=manifest["version"],
        git_sha=manifest["git_sha"],
        ref=manifest["ref"],
        path=folder,
        runtime_env=manifest.get("runtime_env", {}),
        digests=manifest.get("digests", {}),
        source=manifest.get("source", ""),
        images=manifest.get("images", {}),
    )


def load_build(environment: str, version: str) -> Build:
    folder = releases_dir(environment) / check_version(version)
    if not (folder / MANIFEST).exists():
        known = ", ".join(list_versions(environment)) or "none"
        raise BuildError(
            f"unknown version {version!r} in environment {environment!r}; built: {known}"
        )
    return _read_manifest(folder)


def list_versions(environment: str) -> list[str]:
    folder = releases_dir(environment)
    if not folder.exists():
        return []
    # Only finished builds: a staging folder (`.build-*`) is never a version.
    return sorted(
        path.parent.name for path in folder.glob(f"*/{MANIFEST}") if VERSION.match(path.parent.name)
    )


def build_release(
    environment: str,
    version: str,
    source: SourceTree,
    runtime_env: dict[str, str] | None = None,
    registry: str | None = None,
    say: images.Say | None = None,
) -> tuple[Build, bool]:
    """Build `version` from `source` (a commit's tree or the working tree). (build, reused).

    With a `registry`, the app's images are built from the release's files and pushed there;
    a stored build is reused as it is (an unchanged commit is never rebuilt).
    """
    check_version(version)
    ref_name, git_sha = source.ref, build_identity(source)
    wanted_env = dict(sorted((runtime_env or {}).items()))
    folder = releases_dir(environment) / version
    if (folder / MANIFEST).exists():
        existing = _read_manifest(folder)
        if existing.git_sha != git_sha or existing.runtime_env != wanted_env:
            raise BuildError(
                f"version {version!r} is already built from {existing.git_sha} "
                f"({existing.ref}); a different build needs a new version"
            )
        return existing, True
    staging: Path | None = None
    try:
        # Assembled next to its final place (same file system), then renamed: all or nothing.
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".build-{version}-", dir=folder.parent))
        _export_source(source, staging)
        manifest = {
            "version": version,
            "git_sha": git_sha,
            "ref": ref_name,
            "source": source.url,
            "runtime_env": wanted_env,
            "built_at": datetime.now(UTC).isoformat(),
            "digests": layer_digests(source, staging),
        }
        if registry is not None:
            labels = images.oci_labels(version, source.sha, source.url)
            built = images.build_and_push(
                staging, registry, version, labels, say or (lambda _line: None)
            )
            manifest["images"] = {image.component: image.reference for image in built}
            manifest["image_sizes_mb"] = {image.component: image.size_mb for image in built}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
        staging.chmod(0o755)
        os.rename(staging, folder)
    except images.ImageError as error:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        raise BuildError(f"build {version!r}: {error}") from error
    except OSError as error:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if (folder / MANIFEST).exists():  # a concurrent build of the same version won the race
            return build_release(environment, version, source, runtime_env, registry, say)
        raise BuildError(f"cannot store build {version!r} under {folder}: {error}") from error
    except BaseException:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    return _read_manifest(folder), False
