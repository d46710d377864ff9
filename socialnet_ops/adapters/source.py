"""The project's source: a bare mirror of its git repository and one read-only tree per commit.

Every run that acts on a commit reads what it deploys (app, chart and values, Terraform, Ansible,
migrations, policies) from that commit's tree, never from the control plane's own checkout. The
mirror is fetched at the start of each such run; a commit's deployable paths (`app/`,
`deployments/`, `infrastructure/`; SOCIALNET_SOURCE_PATHS to change) are extracted once into
`<cache>/trees/<sha>/` (a commit id names its content, so the tree is shared by reruns and by every
run of the same commit) and made read-only.

The repository is a control-plane setting: `SOCIALNET_SOURCE_URL` (a GitLab URL with
`SOCIALNET_SOURCE_TOKEN_FILE`, or any git URL); without it, the control plane's own repository.
Hand-written over the git CLI: what is needed is a few plumbing commands (fetch, rev-parse,
merge-base, read-tree, checkout-index, log), and the CLI is what GitLab's and git's docs
describe; a binding (GitPython, pygit2) would add a dependency without removing this code.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from socialnet_ops.core.paths import repo_root, state_root
from socialnet_ops.core.release import SourceTree

URL_SETTING = "SOCIALNET_SOURCE_URL"
TOKEN_SETTING = "SOCIALNET_SOURCE_TOKEN_FILE"  # noqa: S105 (a setting name)
CACHE_SETTING = "SOCIALNET_SOURCE_CACHE"
FETCH_TIMEOUT_SECONDS = 120
# The branches and tags, and GitLab's merge request heads (a fork's commits are only there).
REFSPECS = (
    "+HEAD:refs/source/HEAD",  # the remote's default branch, for `--ref HEAD`
    "+refs/heads/*:refs/heads/*",
    "+refs/tags/*:refs/tags/*",
    "+refs/merge-requests/*/head:refs/merge-requests/*/head",
)
COMMIT_ID = re.compile(r"^[0-9a-f]{40}$")
# What runs read from a commit (app, Dockerfiles, chart, values, Terraform, Ansible, migrations,
# policies); the control plane's own code is never taken from it. "." takes everything.
PATHS_SETTING = "SOCIALNET_SOURCE_PATHS"
DEFAULT_PATHS = ("app", "deployments", "infrastructure")
WORKING_TREE = "working-tree"


class SourceError(Exception):
    """The source cannot give what was asked; the message is one line naming the URL and commit."""


def _shown(url: str) -> str:
    """The URL without credentials, fit for logs and errors."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit(parts._replace(netloc=netloc))
    return url


@dataclass(frozen=True)
class SourceSettings:
    url: str
    token_file: Path | None = None

    @classmethod
    def configured(cls) -> SourceSettings:
        url = os.environ.get(URL_SETTING, "").strip() or str(repo_root())
        token = os.environ.get(TOKEN_SETTING, "").strip()
        return cls(url=url, token_file=Path(token) if token else None)

    @property
    def shown_url(self) -> str:
        return _shown(self.url)

    def git_environment(self) -> dict[str, str]:
        """How git reaches the remote: never a prompt, the token as a header (not in argv)."""
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/true"}
        config = {"credential.helper": "", "http.lowSpeedLimit": "1", "http.lowSpeedTime": "30"}
        if self.token_file is not None:
            try:
                token = self.token_file.read_text().strip()
            except OSError as error:
                raise SourceError(
                    f"{TOKEN_SETTING}={self.token_file}: cannot read the token ({error.strerror})"
                ) from None
            basic = base64.b64encode(f"oauth2:{token}".encode()).decode()
            config["http.extraHeader"] = f"Authorization: Basic {basic}"
        env["GIT_CONFIG_COUNT"] = str(len(config))
        for index, (key, value) in enumerate(config.items()):
            env[f"GIT_CONFIG_KEY_{index}"] = key
            env[f"GIT_CONFIG_VALUE_{index}"] = value
        return env


def deployable_paths() -> tuple[str, ...]:
    configured = os.environ.get(PATHS_SETTING, "").split()
    return tuple(sorted(configured)) if configured else DEFAULT_PATHS


def cache_root() -> Path:
    override = os.environ.get(CACHE_SETTING)
    return Path(override) if override else state_root() / "source"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # git's own words, without its "fatal: " and "error: " prefixes
    return re.sub(r"^(fatal|error): ", "", lines[-1]) if lines else "no message"


class SourceRepository:
    """The mirror of one repository and the commit trees taken from it."""

    def __init__(self, settings: SourceSettings | None = None, cache: Path | None = None) -> None:
        self.settings = settings or SourceSettings.configured()
        root = cache or cache_root()
        slug = hashlib.sha256(self.settings.url.encode()).hexdigest()[:16]
        self.mirror = root / "mirrors" / f"{slug}.git"
        self.trees = root / "trees"

    @property
    def url(self) -> str:
        return self.settings.shown_url

    # --- git -------------------------------------------------------------------------------------

    def _git(self, *arguments: str, remote: bool = False) -> subprocess.CompletedProcess[str]:
        env = self.settings.git_environment() if remote else {**os.environ}
        try:
            return subprocess.run(
                ["git", f"--git-dir={self.mirror}", *arguments],
                capture_output=True,
                text=True,
                env=env,
                timeout=FETCH_TIMEOUT_SECONDS,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise SourceError(
                f"git {arguments[0]} of {self.url} took more than {FETCH_TIMEOUT_SECONDS} s"
            ) from None

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One fetch at a time per mirror: concurrent fetches would fight over ref locks."""
        self.mirror.parent.mkdir(parents=True, exist_ok=True)
        with open(self.mirror.parent / f"{self.mirror.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def fetch(self) -> None:
        """Bring the mirror up to date with the remote (made on first use)."""
        with self._locked():
            if not (self.mirror / "HEAD").exists():
                created = subprocess.run(
                    ["git", "init", "--quiet", "--bare", str(self.mirror)],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if created.returncode != 0:
                    raise SourceError(f"cannot make the mirror {self.mirror}: {created.stderr}")
            fetched = self._git(
                "fetch", "--prune", "--quiet", "--no-write-fetch-head", self.settings.url,
                *REFSPECS, remote=True,
            )  # fmt: skip
        if fetched.returncode != 0:
            raise SourceError(f"cannot fetch {self.url}: {_last_line(fetched.stderr)}")

    def _commit(self, name: str) -> str | None:
        found = self._git("rev-parse", "--verify", "--quiet", f"{name}^{{commit}}")
        return found.stdout.strip() if found.returncode == 0 else None

    def resolve(self, ref: str, on: str | None = None) -> str:
        """The commit `ref` names in the mirror (fetch first). `on`: the branch or tag that must
        still hold it (a commit force-pushed away, or a deleted branch, is not released)."""
        if ref.startswith("-") or not ref.strip():
            raise SourceError(f"git ref {ref!r} is not valid")
        if COMMIT_ID.match(ref):
            candidates = [ref]
        elif ref == "HEAD":
            candidates = ["refs/source/HEAD"]
        else:
            candidates = [f"refs/heads/{ref}", f"refs/tags/{ref}", ref]
        sha = next((found for name in candidates if (found := self._commit(name))), None)
        if sha is None:
            what = "commit" if COMMIT_ID.match(ref) else "git ref"
            where = f"; {self._where(on)}" if on else ""
            raise SourceError(f"{what} {ref!r} is not in {self.url} (fetched just now){where}")
        if on:
            self._check_still_on(sha, on)
        return sha

    def _tip(self, name: str) -> str | None:
        """The commit the branch (or else the tag) `name` points at; None when neither exists."""
        return self._commit(f"refs/heads/{name}") or self._commit(f"refs/tags/{name}")

    def _where(self, name: str) -> str:
        tip = self._tip(name)
        return f"{name!r} no longer exists" if tip is None else f"{name!r} is at {tip[:12]}"

    def _check_still_on(self, sha: str, name: str) -> None:
        # One git call in the usual case: the branch or tag of that name that contains sha.
        holding = self._git(
            "for-each-ref", "--format=%(refname)", f"--contains={sha}",
            f"refs/heads/{name}", f"refs/tags/{name}",
        )  # fmt: skip
        if holding.returncode == 0 and holding.stdout.strip():
            return
        tip = self._tip(name)
        if tip is None:
            raise SourceError(f"{name!r} no longer exists in {self.url}: {sha[:12]} not released")
        raise SourceError(
            f"commit {sha[:12]} is no longer on {name!r} in {self.url} (it was force-pushed "
            f"to {tip[:12]}): not released"
        )

    # --- trees -----------------------------------------------------------------------------------

    def tree(self, sha: str, ref: str) -> SourceTree:
        """The read-only tree of commit `sha` (its deployable paths), extracted once and reused."""
        paths = deployable_paths()
        suffix = (
            ""
            if paths == DEFAULT_PATHS
            else "-" + hashlib.sha256(" ".join(paths).encode()).hexdigest()[:8]
        )
        folder = self.trees / f"{sha}{suffix}"
        if not (folder / ".socialnet-source").is_file():
            self._extract(sha, folder, paths)
        return SourceTree(root=folder, sha=sha, ref=ref, url=self.url)

    def _extract(self, sha: str, folder: Path, paths: tuple[str, ...]) -> None:
        """git itself writes the files (the commit's files under `paths`, through a private
        index): many times faster than unpacking `git archive` in Python."""
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{sha[:12]}-", dir=folder.parent))
        try:
            index = {**os.environ, "GIT_INDEX_FILE": str(staging.with_suffix(".index"))}
            listed = self._git("ls-tree", "-r", "-z", "--name-only", sha, "--", *paths)
            files = listed.stdout if listed.returncode == 0 else ""
            for command, given in (
                (["read-tree", sha], None),
                ([f"--work-tree={staging}", "checkout-index", "--force", "-z", "--stdin"], files),
            ):
                done = subprocess.run(
                    ["git", f"--git-dir={self.mirror}", *command], input=given,
                    capture_output=True, text=True, env=index, check=False,
                )  # fmt: skip
                if done.returncode != 0:
                    raise SourceError(
                        f"cannot extract {sha[:12]} from {self.url}: {_last_line(done.stderr)}"
                    )
            (staging / ".socialnet-source").write_text(f"{sha}\n{self.url}\n")
            _read_only(staging)
            try:
                staging.rename(folder)
            except OSError:
                if not (folder / ".socialnet-source").is_file():  # not a concurrent extractor
                    raise
        finally:
            staging.with_suffix(".index").unlink(missing_ok=True)
            if staging.exists():
                remove_tree(staging)

    # --- history -------------------------------------------------------------------------------

    def commits_between(self, base: str, head: str, limit: int = 50) -> list[str]:
        """`<short sha> <subject>` of the commits in head and not in base, newest first."""
        listed = self._git("log", "--format=%h %s", f"-{limit}", f"{base}..{head}")
        return listed.stdout.splitlines() if listed.returncode == 0 else []

    def changed_paths(self, base: str, head: str) -> list[str]:
        diff = self._git("diff", "--name-only", base, head)
        return diff.stdout.splitlines() if diff.returncode == 0 else []


def _read_only(root: Path) -> None:
    for path in [*root.rglob("*"), root]:
        if path.is_symlink():
            continue
        path.chmod(0o555 if path.is_dir() else (0o555 if os.access(path, os.X_OK) else 0o444))


def remove_tree(root: Path) -> None:
    """Remove a tree, read-only ones included."""
    for path in [root, *root.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
    shutil.rmtree(root, ignore_errors=True)


def working_tree() -> SourceTree:
    """The control plane's own checkout, for runs without a commit (said in their reports)."""
    return SourceTree(root=repo_root(), sha=None, ref=WORKING_TREE, url=str(repo_root()))


def checkout(ref: str | None, on: str | None = None) -> SourceTree:
    """Fetch, resolve and extract `ref` (None: the working tree)."""
    if ref is None:
        return working_tree()
    repository = SourceRepository()
    repository.fetch()
    sha = repository.resolve(ref, on)
    return repository.tree(sha, ref)
