"""The release store, with the real git repository of the project."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from socialnet_ops.adapters.builds import BuildError, build_release, list_versions, load_build
from socialnet_ops.adapters.source import SourceError, checkout, working_tree

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SOCIALNET_STATE_DIR", str(tmp_path))
    return tmp_path


def head() -> str:
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_a_build_at_a_ref_holds_that_commit_and_is_reused(state_dir: Path) -> None:
    build, reused = build_release("local", "v1", checkout("HEAD"))
    assert not reused and build.git_sha == head()
    assert build.path == state_dir / "local" / "releases" / "v1"
    assert (build.path / "app" / "__init__.py").exists()
    again, reused = build_release("local", "v1", checkout("HEAD"))
    assert reused and again == build
    assert load_build("local", "v1") == build
    assert list_versions("local") == ["v1"]


def test_the_working_tree_builds_and_runtime_settings_are_recorded() -> None:
    build, _ = build_release("local", "v2", working_tree(), {"SOCIALNET_FAULT_ERROR_RATE": "0.3"})
    assert build.git_sha.startswith("worktree-") and build.ref == "working-tree"
    assert build.path is not None
    manifest = json.loads((build.path / "build.json").read_text())
    assert manifest["runtime_env"] == {"SOCIALNET_FAULT_ERROR_RATE": "0.3"}


def test_a_version_cannot_be_rebuilt_from_something_else() -> None:
    build_release("local", "v3", checkout("HEAD"))
    with pytest.raises(BuildError, match="already built from"):
        build_release("local", "v3", checkout("HEAD"), {"SOCIALNET_FAULT_LATENCY_MS": "400"})


def test_bad_refs_versions_and_unknown_builds_are_clear_errors(state_dir: Path) -> None:
    with pytest.raises(
        SourceError, match=r"git ref 'no-such-branch' is not in .* \(fetched just now\)"
    ):
        checkout("no-such-branch")
    with pytest.raises(BuildError, match="is not valid"):
        build_release("local", "../escape", working_tree())
    with pytest.raises(
        BuildError, match="unknown version 'v9' in environment 'local'; built: none"
    ):
        load_build("local", "v9")
    assert not (state_dir / "local" / "releases").exists() or list_versions("local") == []
