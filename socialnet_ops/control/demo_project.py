"""The demo's project as a user has it: a repository on a git remote, and GitLab's webhooks.

The repository is served by the control plane's local git remote (`git daemon` on 127.0.0.1),
seeded from the files of this checkout; the demo commits to a clone and pushes. A push is
announced as GitLab does, a `Push Hook` delivery to the webhook receiver, which starts the run
of the gitflow mapping; the demo then waits for that run like a person watching the UI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

from socialnet_ops.adapters.gitlab import read_secret_file
from socialnet_ops.control import control_plane
from socialnet_ops.core.paths import repo_root

NAME = "socialnet.git"
PROJECT_PATH = "socialnet/socialnet"
IDENTITY = {
    "GIT_AUTHOR_NAME": "Demo",
    "GIT_AUTHOR_EMAIL": "demo@socialnet.example",
    "GIT_COMMITTER_NAME": "Demo",
    "GIT_COMMITTER_EMAIL": "demo@socialnet.example",
}
RUN_TIMEOUT_S = 900.0


class DemoProjectError(Exception):
    pass


def _git(*arguments: str, cwd: Path | None = None) -> str:
    done = subprocess.run(
        ["git", *arguments], cwd=cwd, capture_output=True, text=True, timeout=120,
        env={**os.environ, **IDENTITY, "GIT_TERMINAL_PROMPT": "0"}, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise DemoProjectError(f"git {arguments[0]} failed: {done.stderr.strip()[-300:]}")
    return done.stdout.strip()


def demo_gitflow(configure_nodes: bool) -> Path:
    """The demo's mapping: every push to develop releases that commit to `local`."""
    path = control_plane.control_plane_dir() / "demo-gitflow.yaml"
    mapping = {
        "projects": [PROJECT_PATH],
        "rules": [
            {
                "name": "develop-to-local",
                "description": "The demo: every push to develop is released to local.",
                "event": "push",
                "match": {"branch": "develop"},
                "deployment": "release/release-local",
                "parameters": {
                    "env": "local",
                    "version": "{branch_slug}-{short_sha}",
                    "ref": "{sha}",
                    "configure_nodes": configure_nodes,
                },
            }
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(mapping, sort_keys=False))
    return path


@dataclass
class DemoProject:
    url: str
    work: Path

    @classmethod
    def seeded(cls) -> DemoProject:
        """A fresh repository on the local remote holding this checkout's files on main and
        develop, and a clone to commit in."""
        bare = control_plane.git_remote_dir() / NAME
        work = control_plane.control_plane_dir() / "demo-work"
        for folder in (bare, work):
            shutil.rmtree(folder, ignore_errors=True)
        _git("init", "--quiet", "--bare", "-b", "main", str(bare))
        _git("config", "daemon.receivepack", "true", cwd=bare)  # the demo pushes to it
        project = cls(url=control_plane.git_remote_url(NAME), work=work)
        _git("init", "--quiet", "-b", "main", str(work))
        listed = _git("ls-files", "--cached", "--others", "--exclude-standard", cwd=repo_root())
        for name in listed.splitlines():
            source = repo_root() / name
            if source.is_file():
                (work / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, work / name)
        _git("add", "--all", cwd=work)
        _git("commit", "--quiet", "-m", "socialnet: the project", cwd=work)
        _git("push", "--quiet", project.url, "HEAD:refs/heads/main", "HEAD:refs/heads/develop",
             cwd=work)  # fmt: skip
        return project

    def head(self) -> str:
        return _git("rev-parse", "HEAD", cwd=self.work)

    def push_change(self, path: str, text: str, message: str) -> str:
        """Commit `text` to `path` and push it to develop; the new commit's sha."""
        (self.work / path).write_text(text)
        _git("add", path, cwd=self.work)
        _git("commit", "--quiet", "-m", message, cwd=self.work)
        _git("push", "--quiet", self.url, "HEAD:refs/heads/develop", cwd=self.work)
        return self.head()


def deliver_push(before: str, sha: str) -> str:
    """Announce a push to develop as GitLab does; the delivery's id (its run carries it)."""
    event_id = str(uuid.uuid4())
    body: dict[str, Any] = {
        "object_kind": "push",
        "ref": "refs/heads/develop",
        "before": before,
        "after": sha,
        "checkout_sha": sha,
        "user_username": "demo",
        "project_id": 1,
        "project": {"id": 1, "path_with_namespace": PROJECT_PATH},
        "commits": [],
        "total_commits_count": 1,
    }
    token = read_secret_file(control_plane.webhook_token_file(), "the webhook token")
    status = control_plane.control_plane_status()
    answer = httpx.post(
        status["webhook_url"],
        json=body,
        headers={
            "X-Gitlab-Event": "Push Hook",
            "X-Gitlab-Token": token,
            "X-Gitlab-Event-UUID": event_id,
        },
        timeout=30,
    )
    if answer.status_code != 202:
        raise DemoProjectError(f"the receiver answered {answer.status_code}: {answer.text[:300]}")
    return event_id


def delivered_run_result(event_id: str, timeout: float = RUN_TIMEOUT_S) -> Any:
    """Wait for the run the delivery started to finish; its result (or its failure, raised)."""
    deadline = time.monotonic() + timeout
    tags = FlowRunFilter(tags=FlowRunFilterTags(all_=[f"gitlab.event_id:{event_id}"]))
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(flow_run_filter=tags)
            if runs and runs[0].state is not None and runs[0].state.is_final():
                state = runs[0].state
                if not state.is_completed():
                    raise DemoProjectError(
                        f"run {runs[0].name} ended {state.name}: {state.message}"
                    )
                return state.result()
            time.sleep(2)
    raise DemoProjectError(f"no run of delivery {event_id} finished within {timeout:.0f} s")
