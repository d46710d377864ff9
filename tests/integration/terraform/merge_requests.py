"""Merge requests as GitLab delivers them, for the merge request test of test_provision.py (it
lives there to share the package's applied stack: `--dist loadfile` gives each file's tests to one
worker, and a second file could pay for a second applied stack, about 3 minutes).

Deliveries go through the receiver's own parsing and gitflow mapping (the shipped rules, pointed
at `local`); the runs start in-process with the launch's parameters and tags, as the launcher
would start them (tests/integration/release/test_gitops.py does the same). Merges and closes go
through the receiver itself, which releases the locks. GitLab is the API stand-in of the webhook
suite, extended with merge requests, approvals and editable notes.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prefect import tags

from flows.merge_request import apply_merge_request
from flows.provision import provision
from socialnet_ops.adapters.gitlab import GitLabAPI, gitlab_settings
from socialnet_ops.core.environments import load_catalog
from socialnet_ops.core.gitflow import Launch, gitflow_file, launches, load_mapping, matching_rules
from socialnet_ops.core.merge_requests import note_marker
from tests.integration.terraform.conftest import Emulator
from tests.integration.webhooks import payloads
from tests.integration.webhooks.fake_gitlab import TOKEN, FakeGitLab, running_fake_gitlab
from tests.support.git_remote import ProjectRepo
from webhooks.app import ReceiverSettings, create_app
from webhooks.gitlab import parse_event

ENV = "local"
STACK_FILE = "infrastructure/terraform/stacks/local/environment.tf"
RECORD = "aws_ssm_parameter.merge_request"
PARAMETER = "/socialnet/local/merge-request"
WEBHOOK_TOKEN = "wh-merge-requests"
FIRST, SECOND = 31, 32  # merge request iids


def parameter_resource(value: str) -> str:
    """A parameter in SSM: one cheap create and destroy (a DNS record waits ~15 s for sync)."""
    return f"""
resource "aws_ssm_parameter" "merge_request" {{
  name  = "{PARAMETER}"
  type  = "String"
  value = "{value}"
}}
"""


# Everything the policies forbid, in one commit: SSH from anywhere, a public, unencrypted bucket.
VIOLATIONS = """
resource "aws_security_group" "debug" {
  name        = "socialnet-local-debug"
  description = "Debugging access"

  ingress {
    description = "SSH from anywhere"
    from_port   = 22
    to_port     = 22
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

resource "aws_s3_bucket" "exports" {
  bucket = "socialnet-local-exports"
}

resource "aws_s3_bucket_acl" "exports" {
  bucket = aws_s3_bucket.exports.id
  acl    = "public-read"
}
"""


def _secret(path: Path, value: str) -> str:
    path.write_text(value + "\n")
    path.chmod(0o600)
    return str(path)


@contextmanager
def gitlab_for_merge_requests(
    monkeypatch: pytest.MonkeyPatch, folder: Path
) -> Iterator[FakeGitLab]:
    """The GitLab API stand-in, set as the control plane's GitLab (and the receiver's token)."""
    with running_fake_gitlab() as fake:
        monkeypatch.setenv("SOCIALNET_GITLAB_URL", fake.url)
        monkeypatch.setenv("SOCIALNET_GITLAB_TOKEN_FILE", _secret(folder / "gitlab", TOKEN))
        monkeypatch.setenv(
            "SOCIALNET_WEBHOOK_TOKEN_FILE", _secret(folder / "webhook", WEBHOOK_TOKEN)
        )
        monkeypatch.setenv("SOCIALNET_WEBHOOK_NOTICES_FILE", str(folder / "notices.jsonl"))
        yield fake


def local_mapping(folder: Path) -> Path:
    """The shipped gitflow mapping with its merge request rules pointed at `local`."""
    document = yaml.safe_load(gitflow_file().read_text())
    for rule in document["rules"]:
        if rule.get("environments"):
            rule["environments"] = [ENV]
    path = folder / "gitflow.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


class MergeRequests:
    """Deliveries of one project's merge requests, as GitLab sends them."""

    def __init__(self, project: ProjectRepo, gitlab: FakeGitLab, mapping_file: Path) -> None:
        self.project = project
        self.gitlab = gitlab
        self.mapping_file = mapping_file
        self.stacks = {name: env.terraform.stack for name, env in load_catalog().items()}
        self.base = (project.work / STACK_FILE).read_text()  # as on develop

    def push(self, iid: int, branch: str, text: str, message: str) -> str:
        """A commit on the merge request's branch whose `STACK_FILE` is develop's plus `text`;
        GitLab now says the merge request's head is that commit (approval kept as it was)."""
        self.project.write(STACK_FILE, self.base + text)
        sha = self.project.commit(message)
        self.project.push(branch)
        known = self.gitlab.merge_requests.get(iid, {})
        self.gitlab.merge_request(iid, sha, approved=known.get("approved", False))
        self.gitlab.diffs[iid] = [STACK_FILE]
        return sha

    def launch(self, kind: str, body: dict[str, Any]) -> Launch:
        event = parse_event(kind, body, f"delivery-{uuid.uuid4().hex[:8]}")
        mapping = load_mapping(self.mapping_file)
        rules, reason = matching_rules(mapping, event)
        assert rules, reason
        (rule,) = rules
        settings = gitlab_settings()
        assert settings is not None and event.merge_request_iid is not None
        changed = GitLabAPI(settings).merge_request_changed_paths(
            event.project_id, event.merge_request_iid
        )
        (launch,) = launches(mapping, rule, event, changed, self.stacks)
        return launch

    def run(self, kind: str, body: dict[str, Any]) -> Any:
        """What the mapping starts for the delivery, run to its end (raises as the run fails)."""
        launch = self.launch(kind, body)
        flows: dict[str, Any] = {"provision": provision, "mr-apply": apply_merge_request}
        flow = flows[launch.deployment.split("/")[0]]
        with tags(*launch.tags):
            return flow(**launch.parameters)

    def opened(self, iid: int, sha: str, branch: str, oldrev: str | None = None) -> Any:
        action = "update" if oldrev else "open"
        return self.run(
            "merge_request", payloads.merge_request(iid, sha, action, oldrev, source=branch)
        )

    def comment(self, iid: int, sha: str, branch: str, text: str) -> Any:
        return self.run("note", payloads.note(iid, sha, text, source=branch))

    def receiver(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        """Deliver to the webhook receiver itself; its reply once its background work is done."""

        async def deliver() -> dict[str, Any]:
            app = create_app(ReceiverSettings(gitflow_file=self.mapping_file, workers=1))
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://r") as http:
                    reply = await http.post(
                        "/hooks/gitlab",
                        json=body,
                        headers={
                            "X-Gitlab-Event": payloads.EVENT_HEADER[kind],
                            "X-Gitlab-Token": WEBHOOK_TOKEN,
                        },
                    )
                await app.state.launcher.drain()
            assert reply.status_code in {200, 202}, reply.text
            return dict(reply.json())

        return asyncio.run(deliver())

    def plan_notes(self, iid: int) -> list[str]:
        return [body for body in self.gitlab.note_bodies(iid) if note_marker(ENV) in body]

    def replies(self, iid: int) -> list[str]:
        return [body for body in self.gitlab.note_bodies(iid) if note_marker(ENV) not in body]


def parameter_values(emulator: Emulator) -> list[str]:
    """The value of the merge request's parameter in the emulator ([] while it does not exist)."""
    found = emulator.client("ssm").get_parameters(Names=[PARAMETER])["Parameters"]
    return [parameter["Value"] for parameter in found]


def terraform_workspaces() -> Path:
    """Where `local`'s Terraform working copies are (`.local/local/terraform/<use>/`)."""
    return Path(os.environ["SOCIALNET_STATE_DIR"]) / ENV / "terraform"
