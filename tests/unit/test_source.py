"""The project's source: a mirror fetched from a real git remote, one read-only tree per commit."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from socialnet_ops.adapters.source import SourceError, SourceRepository, SourceSettings, remove_tree

pytestmark = pytest.mark.unit

IDENTITY = {
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
}


def git(cwd: Path, *arguments: str) -> str:
    return subprocess.run(
        ["git", *arguments], cwd=cwd, capture_output=True, text=True, check=True,
        env={**os.environ, **IDENTITY},
    ).stdout.strip()  # fmt: skip


class Remote:
    """A bare repository and a clone that commits and pushes to it."""

    def __init__(self, root: Path) -> None:
        self.bare = root / "remote.git"
        self.work = root / "work"
        git(root, "init", "--quiet", "--bare", "-b", "main", str(self.bare))
        git(root, "clone", "--quiet", str(self.bare), str(self.work))
        git(self.work, "checkout", "--quiet", "-b", "main")

    def commit(self, path: str, text: str, branch: str = "main") -> str:
        target = self.work / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        git(self.work, "add", path)
        git(self.work, "commit", "--quiet", "-m", f"change {path}")
        git(self.work, "push", "--quiet", "--force", "origin", f"HEAD:refs/heads/{branch}")
        return git(self.work, "rev-parse", "HEAD")


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    return Remote(tmp_path)


@pytest.fixture
def repository(remote: Remote, tmp_path: Path) -> SourceRepository:
    return SourceRepository(SourceSettings(url=str(remote.bare)), cache=tmp_path / "cache")


def test_a_pushed_commit_is_fetched_and_its_tree_is_read_only_and_shared(
    remote: Remote, repository: SourceRepository
) -> None:
    first = remote.commit("app/version.txt", "1\n")
    repository.fetch()
    assert repository.resolve("main") == first
    second = remote.commit("app/version.txt", "2\n")
    repository.fetch()  # a commit pushed after the mirror was made
    tree = repository.tree(repository.resolve(second), second)
    assert (tree.root / "app" / "version.txt").read_text() == "2\n"
    assert tree.sha == second and tree.root.name == second
    # read-only for everyone (the tests run as root, who could write anyway)
    assert all(path.stat().st_mode & 0o222 == 0 for path in [tree.root, *tree.root.rglob("*")])
    assert repository.tree(second, "main").root == tree.root  # extracted once
    assert repository.commits_between(first, second) == [f"{second[:7]} change app/version.txt"]
    assert repository.changed_paths(first, second) == ["app/version.txt"]
    remove_tree(tree.root)
    assert not tree.root.exists()


def test_a_missing_sha_a_force_push_and_a_deleted_branch_are_one_line_refusals(
    remote: Remote, repository: SourceRepository
) -> None:
    kept = remote.commit("a.txt", "a\n")
    remote.commit("b.txt", "b\n", branch="develop")
    replaced = remote.commit("c.txt", "c\n", branch="feature")
    repository.fetch()
    missing = "0123456789" * 4
    with pytest.raises(SourceError, match=f"commit '{missing}' is not in .*remote.git"):
        repository.resolve(missing)
    git(remote.work, "reset", "--quiet", "--hard", kept)
    remote.commit("d.txt", "d\n", branch="feature")  # feature force-pushed past `replaced`
    repository.fetch()
    with pytest.raises(SourceError, match=f"{replaced[:12]} is no longer on 'feature'"):
        repository.resolve(replaced, on="feature")
    git(remote.work, "push", "--quiet", "origin", ":develop")
    repository.fetch()
    with pytest.raises(SourceError, match="'develop' no longer exists") as error:
        repository.resolve(kept, on="develop")
    assert "\n" not in str(error.value)
    assert repository.resolve(kept, on="main") == kept


def test_an_unreachable_remote_or_unreadable_token_is_one_line(tmp_path: Path) -> None:
    gone = SourceRepository(
        SourceSettings(url="http://127.0.0.1:9/nothing.git"), cache=tmp_path / "cache"
    )
    with pytest.raises(
        SourceError, match=r"cannot fetch http://127.0.0.1:9/nothing.git: .*"
    ) as error:
        gone.fetch()
    assert "\n" not in str(error.value)
    secret = SourceSettings(
        url="http://oauth2:hunter2@127.0.0.1:9/x.git", token_file=tmp_path / "missing-token"
    )
    assert secret.shown_url == "http://127.0.0.1:9/x.git"
    with pytest.raises(SourceError, match="cannot read the token"):
        secret.git_environment()
