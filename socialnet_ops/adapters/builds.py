"""The release store: a build of the app at a git ref (or the working tree), made once and reused.

A build lives under `.local/<env>/releases/<version>/` with a `build.json` manifest; reruns and
rollbacks reuse it. Creating it is atomic: it is assembled in a temporary folder and renamed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from socialnet_ops.core.paths import environment_state_dir, repo_root
from socialnet_ops.core.release import Build

VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MANIFEST = "build.json"
# What a release carries: the app's code. Dependencies come from the project's locked venv.
SOURCE_FOLDERS = ("app",)


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


def resolve_ref(ref: str) -> str:
    """The commit a ref names; a bad ref is an error before anything is built."""
    if ref.startswith("-"):
        raise BuildError(f"git ref {ref!r} is not valid")
    result = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
        cwd=repo_root(),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise BuildError(f"git ref {ref!r} does not name a commit in {repo_root()}")
    return result.stdout.strip()


def _working_tree_digest() -> str:
    digest = hashlib.sha256()
    for folder in SOURCE_FOLDERS:
        for path in sorted((repo_root() / folder).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(repo_root())).encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def source_identity(ref: str | None) -> tuple[str, str]:
    """(ref, git_sha) for a ref, or for the working tree when ref is None."""
    if ref is None:
        return "working-tree", f"worktree-{_working_tree_digest()}"
    return ref, resolve_ref(ref)


def _export_source(git_sha: str, destination: Path) -> None:
    if git_sha.startswith("worktree-"):
        for folder in SOURCE_FOLDERS:
            shutil.copytree(
                repo_root() / folder,
                destination / folder,
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "node_modules"),
            )
        return
    archive = subprocess.Popen(
        ["git", "archive", "--format=tar", git_sha, *SOURCE_FOLDERS],
        cwd=repo_root(),
        stdout=subprocess.PIPE,
    )
    assert archive.stdout is not None
    try:
        with tarfile.open(fileobj=archive.stdout, mode="r|") as tar:
            tar.extractall(destination, filter="data")
        archive.stdout.read()  # the archive's padding: git exits cleanly, not on a closed pipe
    except BaseException:
        # Extraction stopped (e.g. the disk is full): git would stay blocked on the pipe.
        archive.kill()
        raise
    finally:
        archive.stdout.close()
        archive.wait()
    if archive.returncode != 0:
        raise BuildError(f"git archive of {git_sha} failed (exit {archive.returncode})")


def _read_manifest(folder: Path) -> Build:
    manifest = json.loads((folder / MANIFEST).read_text())
    return Build(
        version=manifest["version"],
        git_sha=manifest["git_sha"],
        ref=manifest["ref"],
        path=folder,
        runtime_env=manifest.get("runtime_env", {}),
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
    ref: str | None = None,
    runtime_env: dict[str, str] | None = None,
) -> tuple[Build, bool]:
    """Build `version` from `ref` (None: the working tree). Returns (build, reused)."""
    check_version(version)
    ref_name, git_sha = source_identity(ref)
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
        _export_source(git_sha, staging)
        manifest = {
            "version": version,
            "git_sha": git_sha,
            "ref": ref_name,
            "runtime_env": wanted_env,
            "built_at": datetime.now(UTC).isoformat(),
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
        staging.chmod(0o755)
        os.rename(staging, folder)
    except OSError as error:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if (folder / MANIFEST).exists():  # a concurrent build of the same version won the race
            return build_release(environment, version, ref, runtime_env)
        raise BuildError(f"cannot store build {version!r} under {folder}: {error}") from error
    except BaseException:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    return _read_manifest(folder), False
