"""Drill: the release store's disk fills up in the middle of a build.

The releases folder of an environment is a small tmpfs, too small for the app; a real
`git archive` of app/ runs out of space. The build must fail clearly (no space left, which version,
where), leave nothing a later deploy could pick up (no version folder, no staging folder, the
space given back, no git process left behind), and once the disk has room again, the same build
succeeds, from a plain call as from a rerun of the flow.

Mounting needs root: outside CI the drill is skipped with the reason; under CI it must run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prefect import flow

from socialnet_ops.adapters.builds import (
    RELEASE_FOLDERS,
    BuildError,
    build_release,
    list_versions,
    load_build,
    releases_dir,
)
from socialnet_ops.adapters.source import checkout
from socialnet_ops.core.paths import repo_root
from socialnet_ops.platforms.base import Build
from tasks.git import build_release_task
from tests.support.prefect import state_root
from tests.support.requirements import unavailable

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ENVIRONMENT = "local"
FULL_SIZE = 32 * 1024  # a tmpfs this small holds a few of app/'s files, not all of them
ROOMY_SIZE = 64 * 1024 * 1024  # a limit, not memory taken: tmpfs uses only what is stored
COMMAND_TIMEOUT = 30


def cannot_run(reason: str) -> None:
    unavailable(f"the disk-full drill cannot run: {reason}")


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, capture_output=True, text=True, check=False, timeout=COMMAND_TIMEOUT
    )


@dataclass
class SmallDisk:
    """The environment's releases folder, a tmpfs of `size` bytes."""

    path: Path
    size: int

    def resize(self, size: int) -> None:
        result = run("mount", "-o", f"remount,size={size}", str(self.path))
        assert result.returncode == 0, f"cannot resize {self.path}: {result.stderr.strip()}"
        self.size = size

    def used_bytes(self) -> int:
        stats = os.statvfs(self.path)
        return (stats.f_blocks - stats.f_bfree) * stats.f_frsize

    def entries(self) -> list[str]:
        return sorted(entry.name for entry in self.path.iterdir())


@pytest.fixture
def small_disk() -> Iterator[SmallDisk]:
    """A fresh state root whose `local` releases folder is a tmpfs of FULL_SIZE, always unmounted."""
    if os.geteuid() != 0:
        cannot_run("mounting a tmpfs needs root")
    for tool in ("mount", "umount", "mountpoint", "git"):
        if shutil.which(tool) is None:
            cannot_run(f"{tool} is not installed")
    with state_root("drill-") as root:
        folder = releases_dir(ENVIRONMENT)
        assert folder.is_relative_to(root)
        folder.mkdir(parents=True)
        result = run(
            "mount", "-t", "tmpfs", "-o", f"size={FULL_SIZE},mode=0755", "tmpfs", str(folder)
        )
        if result.returncode != 0:
            cannot_run(f"cannot mount a tmpfs on {folder}: {result.stderr.strip()}")
        try:
            yield SmallDisk(folder, FULL_SIZE)
        finally:
            unmounted = run("umount", str(folder))
            if unmounted.returncode != 0:  # busy: detach it, never leave it behind
                run("umount", "--lazy", str(folder))
            assert run("mountpoint", "-q", str(folder)).returncode != 0, f"{folder} still mounted"


def archive_size(ref: str) -> int:
    archive = subprocess.run(
        ["git", "archive", "--format=tar", ref, "app"],
        cwd=repo_root(),
        capture_output=True,
        check=True,
        timeout=COMMAND_TIMEOUT,
    )
    return len(archive.stdout)


def git_children() -> list[str]:
    """Command lines of this process' children that are git (a build must not leave one behind)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            if parent == os.getpid() and command.startswith("git"):
                found.append(command)
    return found


def assert_nothing_stored(disk: SmallDisk, version: str) -> None:
    assert disk.entries() == [], f"left in the release store: {disk.entries()}"
    assert disk.used_bytes() == 0, "a failed build must give all its space back"
    assert list_versions(ENVIRONMENT) == []
    with pytest.raises(BuildError, match=f"unknown version '{version}'"):
        load_build(ENVIRONMENT, version)
    assert git_children() == [], "the interrupted git archive is still running"


def test_a_build_on_a_full_disk_fails_clearly_leaves_nothing_and_succeeds_with_room(
    small_disk: SmallDisk,
) -> None:
    source = checkout("HEAD")  # the mirror and the commit's tree are outside the small disk
    commit = source.sha
    assert commit is not None
    assert archive_size(commit) > 2 * FULL_SIZE, "app/ fits the small disk: make FULL_SIZE smaller"

    with pytest.raises(BuildError) as failure:
        build_release(ENVIRONMENT, "v1", source)
    message = str(failure.value)
    assert "No space left on device" in message
    assert "'v1'" in message and str(small_disk.path / "v1") in message
    assert_nothing_stored(small_disk, "v1")

    # Trying again on the same full disk is the same clear failure, not a half-built reuse.
    with pytest.raises(BuildError, match="No space left on device"):
        build_release(ENVIRONMENT, "v1", source)
    assert_nothing_stored(small_disk, "v1")

    small_disk.resize(ROOMY_SIZE)  # the operator made room
    build, reused = build_release(ENVIRONMENT, "v1", source)
    assert not reused
    assert (build.version, build.git_sha, build.path) == ("v1", commit, small_disk.path / "v1")
    assert small_disk.entries() == ["v1"], "no staging folder survives a successful build"
    assert load_build(ENVIRONMENT, "v1") == build
    assert list_versions(ENVIRONMENT) == ["v1"]
    stored = build.path
    assert stored is not None
    exported = sorted(str(path.relative_to(stored)) for path in stored.rglob("*") if path.is_file())
    listed = run(
        "git", "-C", str(repo_root()), "ls-tree", "-r", "--name-only", commit, *RELEASE_FOLDERS
    )
    assert exported == sorted([*listed.stdout.split(), "build.json"]), "the build is incomplete"
    assert git_children() == []


@flow(name="drill-build-release", persist_result=False)
def build_once(env: str, version: str, ref: str) -> Build:
    return build_release_task(env, version, checkout(ref))


def test_a_build_task_that_ran_out_of_space_is_not_cached_and_its_rerun_completes(
    prefect_server: None, small_disk: SmallDisk
) -> None:
    failed = build_once(ENVIRONMENT, "v2", "HEAD", return_state=True)
    assert failed.is_failed()
    error = failed.result(raise_on_failure=False)
    assert isinstance(error, BuildError)
    assert "No space left on device" in str(error) and "'v2'" in str(error)
    assert_nothing_stored(small_disk, "v2")

    small_disk.resize(ROOMY_SIZE)
    # The rerun (as from the UI) builds for real: the failed attempt left no cache entry to reuse.
    rerun = build_once(ENVIRONMENT, "v2", "HEAD", return_state=True)
    assert rerun.is_completed(), rerun.message
    build = rerun.result()
    assert isinstance(build, Build)
    assert build == load_build(ENVIRONMENT, "v2")
    assert build.git_sha == checkout("HEAD").sha
    assert small_disk.entries() == ["v2"]
