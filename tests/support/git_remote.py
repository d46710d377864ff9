"""A real git remote on 127.0.0.1 that looks like GitLab's, for tests and benchmarks.

Bare repositories are served over git's smart HTTP protocol by `git http-backend`, the CGI program
shipped with git, behind HTTP Basic auth as GitLab asks for it: user `oauth2`, password = the
token; anything else gets `401` with `WWW-Authenticate: Basic realm="GitLab"`.

Why hand-written: git ships the smart HTTP server only as a CGI, and Python's `http.server` has no
CGI handler that streams (its `CGIHTTPRequestHandler` buffers, forks per request without
authentication and is deprecated). This one checks the token first, streams the request body to
the CGI (decoding `Transfer-Encoding: chunked`, which git uses for pushes above `http.postBuffer`;
gzip bodies are left to http-backend through `HTTP_CONTENT_ENCODING`) and streams the CGI's answer
back chunked over HTTP/1.1 keep-alive.

`ProjectSeed` commits the checkout under test once per session (the files as they are on disk, so
uncommitted work is what the tests see) into a bare template; each `ProjectRepo` is a copy of it
on the remote plus a working clone over HTTP where a test commits, tags and pushes. Every git
command runs with a fixed identity and without the user's global or system config; the token goes
to git through `GIT_CONFIG_*` variables (never in argv or a URL) and is never logged.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import io
import logging
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import IO, Self
from urllib.parse import unquote

import pytest

from socialnet_ops.core.paths import repo_root
from tests.support.requirements import unavailable

logger = logging.getLogger(__name__)

USER = "oauth2"
REALM = 'Basic realm="GitLab"'
IDENTITY = {
    "GIT_AUTHOR_NAME": "socialnet-ops tests",
    "GIT_AUTHOR_EMAIL": "tests@socialnet.invalid",
    "GIT_COMMITTER_NAME": "socialnet-ops tests",
    "GIT_COMMITTER_EMAIL": "tests@socialnet.invalid",
}
_BLOCK = 64 * 1024
_MAX_DRAIN = 1024 * 1024  # a denied request's body up to this is read, so the client sees the 401


class GitError(RuntimeError):
    """A git command failed; the message carries its stderr."""


def basic_authorization(token: str, user: str = USER) -> str:
    """The `Authorization` header value GitLab accepts for `token`."""
    return "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode("ascii")


def git_env(authorization: str | None = None) -> dict[str, str]:
    """The environment for a git client: this process's minus any `GIT_*`, no global or system
    config, no prompts, the test identity, and `authorization` sent as an extra header if given."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}
    env |= IDENTITY | {
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "",  # empty: no askpass program, and SSH_ASKPASS is not tried either
    }
    if authorization is not None:
        env |= {
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "http.extraHeader",
            "GIT_CONFIG_VALUE_0": f"Authorization: {authorization}",
        }
    return env


def run_git(
    *args: str | os.PathLike[str], cwd: Path | None = None, env: Mapping[str, str] | None = None
) -> str:
    """`git args` (quiet about success); its stdout, stripped. Raises `GitError` on failure."""
    done = subprocess.run(
        ["git", *map(str, args)],
        cwd=cwd,
        env=dict(env) if env is not None else git_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise GitError(f"git {' '.join(map(str, args))} exited {done.returncode}: {done.stderr}")
    return done.stdout.strip()


def http_backend_available() -> bool:
    exec_path = subprocess.run(
        ["git", "--exec-path"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return bool(exec_path) and os.access(Path(exec_path) / "git-http-backend", os.X_OK)


@dataclass(frozen=True)
class Served:
    """One request the remote answered (no credentials in it)."""

    method: str
    path: str  # with its query string
    status: int
    authenticated: bool
    chunked: bool = False  # request body sent with Transfer-Encoding: chunked
    encoding: str = ""  # request Content-Encoding, e.g. gzip


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, remote: GitRemote) -> None:
        self.remote = remote
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", port), _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, chunked answers
    timeout = 60  # an idle keep-alive connection ends
    server: _Server

    # -- connection bookkeeping, so that stop() can cut open keep-alive connections too

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)

    def log_message(self, format: str, *args: object) -> None:
        # The request line holds no credentials (they travel in a header); redact anyway.
        message = format % args
        logger.debug(
            "%s %s", self.address_string(), message.replace(self.server.remote.token, "***")
        )

    # -- authentication, as GitLab: Basic oauth2:<token>, else 401 with its realm

    def _authorized(self) -> bool:
        scheme, _, value = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = (
                base64.b64decode(value.strip(), validate=True).decode().partition(":")
            )
        except (binascii.Error, UnicodeDecodeError):
            return False
        remote = self.server.remote
        return user == remote.user and hmac.compare_digest(password.encode(), remote.token.encode())

    def _deny(self) -> None:
        body = b"HTTP Basic: Access denied\n"
        self.send_response(401, "Unauthorized")
        self.send_header("WWW-Authenticate", REALM)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True
        self._record(401, authenticated=False)

    def handle_expect_100(self) -> bool:
        # Answer 401 instead of "100 Continue": the client then never sends the body.
        if not self._authorized():
            self._deny()
            return False
        return super().handle_expect_100()

    # -- the CGI

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _chunked(self) -> bool:
        return "chunked" in self.headers.get("Transfer-Encoding", "").lower()

    def _body(self) -> Iterator[bytes]:
        """The request body, de-chunked."""
        if self._chunked():
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return
                left = size
                while left:
                    block = self.rfile.read(min(left, _BLOCK))
                    if not block:
                        raise ConnectionError("request body cut short")
                    left -= len(block)
                    yield block
                self.rfile.readline()  # the CRLF after the chunk
        left = int(self.headers.get("Content-Length") or 0)
        while left:
            block = self.rfile.read(min(left, _BLOCK))
            if not block:
                raise ConnectionError("request body cut short")
            left -= len(block)
            yield block

    def _serve(self) -> None:
        if not self._authorized():
            length = int(self.headers.get("Content-Length") or 0)
            if not self._chunked() and length <= _MAX_DRAIN:
                self.rfile.read(length)
            self._deny()
            return
        remote = self.server.remote
        path, _, query = self.path.partition("?")
        env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_PROJECT_ROOT": str(remote.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": self.request_version,
            "REQUEST_METHOD": self.command,
            "PATH_INFO": unquote(path),
            "QUERY_STRING": query,
            "REMOTE_USER": remote.user,  # with it, http-backend allows receive-pack
            "REMOTE_ADDR": self.client_address[0],
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
        }
        # Without CONTENT_LENGTH (a chunked body) http-backend reads to EOF, which we close.
        if self.headers.get("Content-Length") and not self._chunked():
            env["CONTENT_LENGTH"] = self.headers["Content-Length"]
        if encoding := self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = encoding  # http-backend inflates gzip itself
        if protocol := self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = protocol

        with tempfile.TemporaryFile() as errors:
            process = subprocess.Popen(
                ["git", "http-backend"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                env=env,
            )
            assert process.stdin is not None and process.stdout is not None
            fed = threading.Event()  # set once the whole request body reached the CGI
            feeder = threading.Thread(target=self._feed, args=(process.stdin, fed), daemon=True)
            feeder.start()
            try:
                status = self._relay(process.stdout)
            except OSError:  # the client went away mid-answer
                process.kill()
                self.close_connection = True
                status = 499
            finally:
                feeder.join()
                process.stdout.close()
                process.wait()
            if not fed.is_set():  # what is left of the body is still on the socket
                self.close_connection = True
            errors.seek(0)
            if stderr := errors.read().decode(errors="replace").strip():
                logger.debug("git http-backend %s: %s", path, stderr)
        self._record(status, authenticated=True)

    def _feed(self, stdin: IO[bytes], fed: threading.Event) -> None:
        try:
            for block in self._body():
                stdin.write(block)
            fed.set()
        except (OSError, ValueError):  # the CGI stopped reading, or the client stopped sending
            pass
        finally:
            with contextlib.suppress(OSError):
                stdin.close()

    def _relay(self, stdout: IO[bytes]) -> int:
        """Turn the CGI's answer (headers, blank line, body) into an HTTP response; its status."""
        status, reason, headers = 200, "OK", []
        while True:
            line = stdout.readline()
            if not line:  # the CGI died before its headers ended
                status, reason, headers = 502, "Bad Gateway", [("Content-Length", "0")]
                break
            line = line.rstrip(b"\r\n")
            if not line:
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "status":
                code, _, reason = value.strip().partition(" ")
                status = int(code)
            else:
                headers.append((name.strip(), value.strip()))
        self.send_response(status, reason)
        for name, value in headers:
            self.send_header(name, value)
        chunked = not any(name.lower() == "content-length" for name, _ in headers)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        while block := stdout.read1(_BLOCK):  # type: ignore[attr-defined]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block) if chunked else block)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
        return status

    def _record(self, status: int, *, authenticated: bool) -> None:
        self.server.remote._served_one(
            Served(
                method=self.command,
                path=self.path,
                status=status,
                authenticated=authenticated,
                chunked=self._chunked(),
                encoding=self.headers.get("Content-Encoding", ""),
            )
        )


class GitRemote:
    """Bare repositories under `root`, served at `http://127.0.0.1:<port>/<name>`.

    `stop()` makes it unreachable (connections refused); `start()` serves again on the same port.
    """

    def __init__(
        self, root: Path, token: str, *, user: str = USER, token_file: Path | None = None
    ) -> None:
        self.root = root
        self.token = token
        self.user = user
        self.token_file = token_file
        self.port = 0  # a free one at the first start, then kept
        self.served: list[Served] = []
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        root.mkdir(parents=True, exist_ok=True)

    # -- lifecycle

    def start(self) -> Self:
        if self._server is None:
            self._server = _Server(self.port, self)
            self.port = self._server.server_address[1]
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"git-remote:{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Close the listening socket and every open connection: the URLs now refuse."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with server.connections_lock:
            for connection in server.connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join()

    def close(self) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- addresses and credentials

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url_of(self, name: str) -> str:
        """E.g. `http://127.0.0.1:PORT/group/socialnet.git` for `group/socialnet.git`."""
        return f"{self.base_url}/{name.strip('/')}"

    @property
    def authorization(self) -> str:
        return basic_authorization(self.token, self.user)

    def env(self) -> dict[str, str]:
        """A git client environment that authenticates to this remote (see `git_env`)."""
        return git_env(self.authorization)

    # -- what was served

    def _served_one(self, served: Served) -> None:
        with self._lock:
            self.served.append(served)

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self.served)

    def reset_counts(self) -> None:
        with self._lock:
            self.served.clear()


def create_bare(root: Path, name: str) -> Path:
    """An empty bare repository `root/name` that accepts pushes over HTTP."""
    bare = root / name
    bare.parent.mkdir(parents=True, exist_ok=True)
    run_git("init", "--quiet", "--bare", "--initial-branch=main", bare)
    run_git("config", "http.receivepack", "true", cwd=bare)
    return bare


def _append_history(work: Path, commits: int) -> None:
    """`commits` generated commits on main, through git fast-import (seconds for thousands)."""
    parent = run_git("rev-parse", "main", cwd=work)
    stream = io.BytesIO()
    for number in range(commits):
        text = base64.b64encode(os.urandom(1536))
        message = f"history: change {number}".encode()
        stream.write(b"commit refs/heads/main\n")
        stream.write(b"committer Test <test@example.invalid> %d +0000\n" % (1_600_000_000 + number))
        stream.write(b"data %d\n%s\n" % (len(message), message))
        if number == 0:
            stream.write(b"from %s\n" % parent.encode())
        stream.write(b"M 100644 inline history/file-%02d.txt\n" % (number % 50))
        stream.write(b"data %d\n%s\n" % (len(text), text))
    subprocess.run(
        ["git", "fast-import", "--quiet"], cwd=work, input=stream.getvalue(), check=True,
        env=git_env(),
    )  # fmt: skip


class ProjectSeed:
    """The checkout under test committed once into a bare template, copied for each project.

    The files are those `git ls-files` lists in `repo_root()` plus untracked, not ignored ones,
    as they are on disk: uncommitted work in the tree is what the tests see.
    """

    def __init__(
        self,
        folder: Path,
        source: Path | None = None,
        history: bool = False,
        older_commits: int = 0,
    ) -> None:
        """`history`: the seed commit goes on top of the source's own git history (a project
        with a past, for benchmarks), after `older_commits` more of a generated past (each
        rewrites one of 50 files with 2 KiB of random text); otherwise it is a first commit."""
        source = source or repo_root()
        work = folder / "seed-work"
        if history:
            run_git("clone", "--quiet", "--no-checkout", str(source), work)
            run_git("branch", "--move", "--force", "main", cwd=work)  # the tree stays empty
            if older_commits:
                _append_history(work, older_commits)
        else:
            work.mkdir(parents=True)
        listed = run_git("ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=source)
        for relative in sorted(set(filter(None, listed.split("\0")))):
            origin = source / relative
            if origin.is_file() or origin.is_symlink():  # deleted on disk, or a submodule: no
                (work / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, work / relative, follow_symlinks=False)
        if not history:
            run_git("init", "--quiet", "--initial-branch=main", cwd=work)
        run_git("add", "--all", "--force", ".", cwd=work)
        run_git("commit", "--quiet", "--no-verify", "-m", "Seed: the checkout under test", cwd=work)
        self.sha = run_git("rev-parse", "HEAD", cwd=work)
        self.template = create_bare(folder, "seed.git")
        run_git("push", "--quiet", self.template, "main:main", "main:develop", cwd=work)
        run_git("gc", "--quiet", cwd=self.template)  # one pack: cheap to copy and to serve
        shutil.rmtree(work)

    def create(self, root: Path, name: str) -> Path:
        """A copy of the template at `root/name` (a bare repo path), with `main` and `develop`."""
        bare = root / name
        bare.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(self.template, bare)
        return bare


class ProjectRepo:
    """A project on a `GitRemote` and a working clone of it (on `develop`) to commit and push."""

    def __init__(self, remote: GitRemote, name: str, work: Path) -> None:
        self.remote = remote
        self.name = name
        self.work = work

    @classmethod
    def create(cls, remote: GitRemote, name: str, seed: ProjectSeed, workspace: Path) -> Self:
        """Seed `name` on `remote` and clone it over HTTP into `workspace/work`."""
        seed.create(remote.root, name)
        work = workspace / "work"
        run_git(
            "clone", "--quiet", "--branch", "develop", remote.url_of(name), work, env=remote.env()
        )
        return cls(remote, name, work)

    @property
    def url(self) -> str:
        return self.remote.url_of(self.name)

    @property
    def bare(self) -> Path:
        return self.remote.root / self.name

    def git(self, *args: str | os.PathLike[str]) -> str:
        """Any git command in the working clone, authenticated to the remote."""
        return run_git(*args, cwd=self.work, env=self.remote.env())

    # -- the working tree

    def write(self, path: str, text: str) -> Path:
        target = self.work / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        return target

    def write_bytes(self, path: str, data: bytes) -> Path:
        target = self.work / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return target

    def remove(self, path: str) -> None:
        (self.work / path).unlink()

    def commit(self, message: str) -> str:
        """Every change in the working tree committed (empty commits allowed); the new sha."""
        self.git("add", "--all")
        self.git("commit", "--quiet", "--no-verify", "--allow-empty", "-m", message)
        return self.head_sha()

    def head_sha(self, ref: str = "HEAD") -> str:
        return self.git("rev-parse", f"{ref}^{{commit}}")

    def switch(self, branch: str, start: str | None = None) -> None:
        """Check out `branch`, created (or reset) at `start` when given."""
        self.git("switch", "--quiet", *(("-C", branch, start) if start else (branch,)))

    # -- the remote

    def push(self, branch: str = "develop", ref: str = "HEAD") -> None:
        self.git("push", "--quiet", "origin", f"{ref}:refs/heads/{branch}")

    def force_push(self, branch: str = "develop", ref: str = "HEAD") -> None:
        self.git("push", "--quiet", "--force", "origin", f"{ref}:refs/heads/{branch}")

    def tag(self, name: str, sha: str = "HEAD", message: str | None = None) -> None:
        """A lightweight tag, or an annotated one when `message` is given."""
        self.git("tag", *(("-a", "-m", message) if message else ()), name, sha)

    def push_tag(self, name: str) -> None:
        self.git("push", "--quiet", "origin", f"refs/tags/{name}")

    def delete_branch(self, name: str) -> None:
        self.git("push", "--quiet", "origin", "--delete", f"refs/heads/{name}")

    def delete_tag(self, name: str) -> None:
        self.git("push", "--quiet", "origin", "--delete", f"refs/tags/{name}")

    def remote_refs(self) -> dict[str, str]:
        """`git ls-remote` over HTTP: ref -> sha (annotated tags also as `<tag>^{}`)."""
        listed = self.git("ls-remote", "origin")
        return {ref: sha for sha, ref in (line.split("\t") for line in listed.splitlines())}

    def remote_sha(self, ref: str) -> str | None:
        return self.remote_refs().get(ref)


# -- pytest fixtures; `tests/conftest.py` imports them


@pytest.fixture(scope="session")
def git_remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitRemote]:
    """A started GitLab-like git remote for the session; its token is also in `token_file` (0600)."""
    if not http_backend_available():
        unavailable("git http-backend is not installed (git's smart HTTP server)")
    folder = tmp_path_factory.mktemp("git-remote")
    token = "glpat-" + secrets.token_urlsafe(24)
    token_file = folder / "token"
    token_file.touch(mode=0o600)
    token_file.chmod(0o600)
    token_file.write_text(token + "\n")
    with GitRemote(folder / "repos", token, token_file=token_file) as remote:
        yield remote


@pytest.fixture(scope="session")
def project_seed(tmp_path_factory: pytest.TempPathFactory) -> ProjectSeed:
    """The checkout under test, committed once per session."""
    return ProjectSeed(tmp_path_factory.mktemp("git-seed"))


@pytest.fixture
def project_repo(
    git_remote: GitRemote, project_seed: ProjectSeed, tmp_path: Path
) -> Iterator[ProjectRepo]:
    """A fresh project `group/socialnet-<random>.git` on the session's remote, with `main` and
    `develop` at the seed commit, and a working clone on `develop`."""
    name = f"group/socialnet-{uuid.uuid4().hex[:8]}.git"
    project = ProjectRepo.create(git_remote, name, project_seed, tmp_path)
    yield project
    shutil.rmtree(project.bare, ignore_errors=True)


@pytest.fixture
def project_source(
    project_repo: ProjectRepo, git_remote: GitRemote, monkeypatch: pytest.MonkeyPatch
) -> ProjectRepo:
    """`project_repo`, set as the control plane's source (SOCIALNET_SOURCE_URL and its token)."""
    monkeypatch.setenv("SOCIALNET_SOURCE_URL", project_repo.url)
    monkeypatch.setenv("SOCIALNET_SOURCE_TOKEN_FILE", str(git_remote.token_file))
    return project_repo
