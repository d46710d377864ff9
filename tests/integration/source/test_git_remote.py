"""The GitLab-like git remote of `tests/support/git_remote.py`, with real git clients over HTTP."""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import stat
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.git_remote import (
    REALM,
    GitError,
    GitRemote,
    ProjectRepo,
    ProjectSeed,
    basic_authorization,
    git_env,
    run_git,
)

pytestmark = pytest.mark.integration


def _get(url: str, authorization: str | None = None) -> urllib.request.Request:
    headers = {"Authorization": authorization} if authorization else {}
    return urllib.request.Request(url, headers=headers)  # noqa: S310 (http to 127.0.0.1)


def test_clone_with_the_token(
    git_remote: GitRemote, project_repo: ProjectRepo, project_seed: ProjectSeed, tmp_path: Path
) -> None:
    run_git("clone", "--quiet", project_repo.url, tmp_path / "clone", env=git_remote.env())

    clone = tmp_path / "clone"
    assert run_git("rev-parse", "HEAD", cwd=clone) == project_seed.sha
    assert (clone / "pyproject.toml").is_file()
    assert (clone / "socialnet_ops" / "core" / "paths.py").is_file()
    assert project_repo.remote_refs() == {
        "HEAD": project_seed.sha,
        "refs/heads/main": project_seed.sha,
        "refs/heads/develop": project_seed.sha,
    }
    assert git_remote.token_file is not None
    assert git_remote.token_file.read_text().strip() == git_remote.token
    assert stat.S_IMODE(git_remote.token_file.stat().st_mode) == 0o600


def test_without_or_with_a_wrong_token_401_as_gitlab(
    git_remote: GitRemote, project_repo: ProjectRepo, tmp_path: Path
) -> None:
    info_refs = project_repo.url + "/info/refs?service=git-upload-pack"
    for authorization in (
        None,
        basic_authorization("wrong"),
        basic_authorization(git_remote.token, "root"),
    ):
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(_get(info_refs, authorization), timeout=10)  # noqa: S310
        assert denied.value.code == 401
        assert denied.value.headers["WWW-Authenticate"] == REALM
    with urllib.request.urlopen(_get(info_refs, git_remote.authorization), timeout=10) as answer:  # noqa: S310
        assert answer.status == 200
        assert answer.headers["Content-Type"] == "application/x-git-upload-pack-advertisement"

    # Git sends no credentials until a 401 asks for some; with none to give it stops there.
    no_credentials = r"could not read Username|Authentication failed"
    with pytest.raises(GitError, match=no_credentials):
        run_git("clone", project_repo.url, tmp_path / "anonymous", env=git_env())
    with pytest.raises(GitError, match=no_credentials):
        wrong_header = git_env(basic_authorization("wrong"))
        run_git("clone", project_repo.url, tmp_path / "wrong-header", env=wrong_header)
    with pytest.raises(GitError, match=no_credentials):  # a push too
        run_git("push", project_repo.url, "HEAD:refs/heads/x", cwd=project_repo.work, env=git_env())
    # Credentials in the URL are offered on the 401: a wrong token is an authentication failure.
    address = project_repo.url.removeprefix("http://")
    with pytest.raises(GitError, match="Authentication failed"):
        run_git("clone", f"http://oauth2:wrong@{address}", tmp_path / "wrong", env=git_env())
    run_git(
        "clone", "-q", f"http://oauth2:{git_remote.token}@{address}", tmp_path / "ok", env=git_env()
    )
    assert (tmp_path / "ok" / "pyproject.toml").is_file()


def test_push_shows_in_ls_remote(git_remote: GitRemote, project_repo: ProjectRepo) -> None:
    git_remote.reset_counts()
    project_repo.write("docs/pushed.md", "# pushed\n")
    sha = project_repo.commit("Add a pushed page")
    project_repo.push("develop")
    project_repo.tag("v1.2.3", sha, message="Release 1.2.3")
    project_repo.push_tag("v1.2.3")
    project_repo.push("feature/x")

    refs = project_repo.remote_refs()
    assert refs["refs/heads/develop"] == sha
    assert refs["refs/heads/feature/x"] == sha
    assert refs["refs/tags/v1.2.3^{}"] == sha
    assert refs["refs/heads/main"] != sha

    project_repo.delete_branch("feature/x")
    project_repo.force_push("develop", "HEAD~1")
    refs = project_repo.remote_refs()
    assert "refs/heads/feature/x" not in refs
    assert refs["refs/heads/develop"] == refs["refs/heads/main"]
    assert git_remote.request_count > 0
    assert all(served.status == 200 for served in git_remote.served)
    assert any("git-receive-pack" in served.path for served in git_remote.served)


def test_a_stopped_remote_refuses_connections(
    project_seed: ProjectSeed, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="tests.support.git_remote")
    with GitRemote(tmp_path / "repos", "glpat-own-remote") as remote:
        project_seed.create(remote.root, "group/socialnet.git")
        url = remote.url_of("group/socialnet.git")
        assert url == f"http://127.0.0.1:{remote.port}/group/socialnet.git"
        assert run_git("ls-remote", url, "refs/heads/main", env=remote.env()).startswith(
            project_seed.sha
        )

        remote.stop()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", remote.port), timeout=5)
        with pytest.raises(
            GitError, match=r"Failed to connect|Connection refused|Could not connect"
        ):
            run_git("ls-remote", url, env=remote.env())

        remote.start()  # same port again
        assert run_git("ls-remote", url, "refs/heads/main", env=remote.env()).startswith(
            project_seed.sha
        )
    assert caplog.records, "requests are logged"
    assert "glpat-own-remote" not in caplog.text


def test_a_large_push_is_sent_chunked(
    git_remote: GitRemote, project_repo: ProjectRepo, tmp_path: Path
) -> None:
    data = os.urandom(5 * 1024 * 1024)  # incompressible: a pack above http.postBuffer (1 MiB)
    project_repo.write_bytes("assets/blob.bin", data)
    sha = project_repo.commit("Add a large blob")
    git_remote.reset_counts()
    project_repo.push("develop")

    assert any(
        served.chunked and served.path.endswith("/git-receive-pack") and served.status == 200
        for served in git_remote.served
    )
    run_git(
        "clone",
        "--quiet",
        "--branch",
        "develop",
        project_repo.url,
        tmp_path / "c",
        env=git_remote.env(),
    )
    assert run_git("rev-parse", "HEAD", cwd=tmp_path / "c") == sha
    received = (tmp_path / "c" / "assets" / "blob.bin").read_bytes()
    assert hashlib.sha256(received).digest() == hashlib.sha256(data).digest()


def test_a_large_fetch_request_is_sent_gzipped(
    git_remote: GitRemote, project_repo: ProjectRepo, tmp_path: Path
) -> None:
    # One commit per branch: a clone then wants 40 distinct shas, a request body above 1 KiB
    # that git gzips.
    for number in range(40):
        project_repo.switch(f"feature/f{number}", "develop")
        project_repo.write(f"features/f{number}.txt", f"{number}\n")
        project_repo.commit(f"Feature {number}")
    project_repo.git("push", "--quiet", "origin", "refs/heads/feature/*:refs/heads/feature/*")
    git_remote.reset_counts()

    run_git(
        "clone", "--quiet", "--mirror", project_repo.url, tmp_path / "mirror", env=git_remote.env()
    )

    assert any(served.encoding == "gzip" and served.status == 200 for served in git_remote.served)
    assert run_git("rev-parse", "feature/f39", cwd=tmp_path / "mirror") == project_repo.head_sha()
