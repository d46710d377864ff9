"""GitOps: runs release exactly the commit a GitLab-shaped delivery announced, fetched from a real
git remote over smart HTTP with a token (tests/support/git_remote.py), never the checkout under
test. The delivery goes through the receiver's own parsing and gitflow mapping; the run is started
in-process with the parameters and tags the launcher gives it.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from prefect import tags

from flows.canary import canary
from flows.release import release
from flows.sync_source import sync_source
from socialnet_ops.adapters.builds import load_build
from socialnet_ops.adapters.source import SourceError, SourceRepository, checkout
from socialnet_ops.core.gitflow import launches, load_mapping, matching_rules, promotion_refusal
from socialnet_ops.platforms.local import LocalPlatform
from tasks.ledger import load_ledger
from tests.integration.canary.traffic import UserTraffic
from tests.integration.release.conftest import PRODUCTION, STAGING, Lifecycle
from tests.integration.release.test_release_flow import SKIP_SLOW_STAGES, ensure_first_release
from tests.integration.webhooks import payloads
from tests.support.git_remote import ProjectRepo
from tests.support.prefect import socialnet_events
from webhooks.gitlab import parse_event

pytestmark = pytest.mark.integration

# The launcher's environments are staging and production; this package's are local stand-ins.
ENVIRONMENTS = {"staging": STAGING, "production": PRODUCTION}


@pytest.fixture
def project(project_source: ProjectRepo) -> ProjectRepo:
    """The project's repository on the git remote is the control plane's source."""
    return project_source


def deliver(kind: str, body: dict[str, Any], **overrides: Any) -> Any:
    """Run what the gitflow mapping starts for one delivery, as the launcher would start it."""
    event = parse_event(kind, body, f"delivery-{uuid.uuid4().hex[:8]}")
    mapping = load_mapping()
    rules, reason = matching_rules(mapping, event)
    assert rules, reason
    (launch,) = launches(mapping, rules[0], event)
    flow = {"release": release, "canary": canary}[launch.deployment.split("/")[0]]
    parameters = {**launch.parameters, "env": ENVIRONMENTS[launch.environment], **overrides}
    with tags(*launch.tags):
        return flow(**parameters)


def serving(platform: LocalPlatform, probes: int = 6) -> set[tuple[str, str]]:
    with httpx.Client(base_url=platform.endpoints().edge_url, timeout=5) as client:
        answers = [client.get("/version").json() for _ in range(probes)]
    return {(answer["version"], answer["git_sha"]) for answer in answers}


def push_change(project: ProjectRepo, marker: str, branch: str = "develop") -> str:
    """A commit that changes the app, pushed to `branch`."""
    project.write("app/api/gitops_marker.py", f'MARKER = "{marker}"\n')
    sha = project.commit(f"app: {marker}")
    project.push(branch)
    return sha


def test_a_push_to_develop_releases_exactly_that_commit_to_staging(
    lifecycle: Lifecycle, project: ProjectRepo
) -> None:
    ensure_first_release(lifecycle)
    marker = uuid.uuid4().hex
    sha = push_change(project, marker)
    result = deliver("push", payloads.push("develop", sha), **SKIP_SLOW_STAGES)

    version = f"develop-{sha[:8]}"
    assert result.stages[f"deploy {STAGING}"] == "ok"
    assert serving(lifecycle.staging) == {(version, sha)}
    build = load_build(STAGING, version)
    assert build.path is not None
    assert marker in (build.path / "app/api/gitops_marker.py").read_text()  # the commit's app
    stable = load_ledger(STAGING).stable
    assert stable is not None and stable.manifest is not None
    assert (stable.git_sha, stable.manifest.commit) == (sha, sha)
    assert stable.manifest.source == project.url and "glpat" not in stable.manifest.source
    assert stable.manifest.app == build.digests["app"]
    assert stable.manifest.alembic_head and stable.manifest.secrets  # versions, never values
    assert all(isinstance(version, int) for version in stable.manifest.secrets.values())


def test_what_the_remote_does_not_hold_is_refused_in_one_line_and_changes_nothing(
    lifecycle: Lifecycle, project: ProjectRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    ensure_first_release(lifecycle)
    before, serving_before = load_ledger(STAGING), serving(lifecycle.staging)
    since = datetime.now(UTC)

    missing = payloads.new_sha()
    with pytest.raises(SourceError, match=re.escape(f"commit '{missing}' is not in {project.url}")):
        deliver("push", payloads.push("develop", missing), **SKIP_SLOW_STAGES)

    gone = push_change(project, "force-pushed away")
    checkout(gone)  # the mirror has it: it is refused for not being on develop any more
    project.git("reset", "--hard", "HEAD~1")
    project.write("README.md", "rewritten history\n")
    project.commit("rewrite develop")
    project.force_push("develop")
    with pytest.raises(SourceError, match=f"{gone[:12]} is no longer on 'develop'"):
        deliver("push", payloads.push("develop", gone), **SKIP_SLOW_STAGES)

    orphan = push_change(project, "branch deleted")
    project.delete_branch("develop")
    with pytest.raises(SourceError, match="'develop' no longer exists"):
        deliver("push", payloads.push("develop", orphan), **SKIP_SLOW_STAGES)

    monkeypatch.setenv("SOCIALNET_SOURCE_URL", "http://127.0.0.1:9/socialnet.git")
    with pytest.raises(
        SourceError, match=re.escape("cannot fetch http://127.0.0.1:9/socialnet.git: ")
    ) as error:
        deliver("push", payloads.push("develop", orphan), **SKIP_SLOW_STAGES)
    assert "socialnet.git: " in str(error.value).splitlines()[0]  # git's reason on the same line

    assert load_ledger(STAGING) == before and serving(lifecycle.staging) == serving_before
    rejected = socialnet_events("release.rejected", since)
    assert len(rejected) == 4 and all("git" in str(event["payload"]) for event in rejected)
    assert not socialnet_events("release.failed", since, settle_s=1)  # no rollback started


def test_a_release_tag_on_a_commit_that_served_staging_reaches_production_by_canary(
    lifecycle: Lifecycle, project: ProjectRepo
) -> None:
    ensure_first_release(lifecycle)
    sha = push_change(project, uuid.uuid4().hex)
    deliver("push", payloads.push("develop", sha), **SKIP_SLOW_STAGES)
    staged = load_ledger(STAGING).stable
    assert staged is not None and staged.manifest is not None
    tag = f"v9.{int(uuid.uuid4().int % 1000)}.0"
    project.tag(tag, sha, message="release")
    project.push_tag(tag)
    assert promotion_refusal(STAGING, load_ledger(STAGING), sha) is None  # the receiver's gate

    with UserTraffic(lifecycle.production.endpoints().edge_url, rate=25, max_seconds=240) as users:
        result = deliver("tag_push", payloads.tag_push(tag, sha))
    assert result.outcome == "promoted"
    assert users.report.failed() == 0
    assert serving(lifecycle.production) == {(tag, sha)}
    released = load_ledger(PRODUCTION).stable
    assert released is not None and released.manifest is not None
    # The same freight as staging: commit, app, chart, migrations.
    same = ("commit", "source", "app", "chart", "alembic_head")
    assert released.manifest.model_dump(include=set(same)) == staged.manifest.model_dump(
        include=set(same)
    )


def test_the_scheduled_sync_keeps_the_mirror_up_to_date(
    prefect_server: None, project: ProjectRepo
) -> None:
    sha = push_change(project, uuid.uuid4().hex)
    assert sync_source() == project.url
    assert SourceRepository().resolve(sha, on="develop") == sha  # no fetch: already mirrored
