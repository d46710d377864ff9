"""diff: what releasing a commit would change where a release serves, in every layer.

serving release -> commits -> files by layer -> chart and values -> pending migrations -> secret
versions -> Terraform plan of the commit -> Ansible check mode of the commit. Nothing changes:
the plan is not applied and check mode changes no node. A plan or check that cannot run (no
nodes, no cloud credentials) is said in the diff, not a failure of it.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from flows.common import checked_environment, checked_source
from flows.configure import configure
from flows.provision import provision
from socialnet_ops.core.failures import RejectedError, before_any_change, one_line
from socialnet_ops.core.results import DiffResult, paths_by_layer
from tasks.git import compare_commits, compare_release_files
from tasks.ledger import read_ledger
from tasks.reporting import publish
from tasks.vault import read_secret_versions


class NoCommitError(RejectedError):
    """A diff compares a commit: a ref is needed."""


@flow(name="diff", flow_run_name="diff-{env}")
def diff(env: str, ref: str, plan_infra: bool = True, check_nodes: bool = True) -> DiffResult:
    """`ref` (a sha, branch or tag of the project's repository) against what serves `env`."""
    with before_any_change():
        environment = checked_environment(env)
        source = checked_source(ref)
        if source.sha is None:
            raise NoCommitError(f"ref {ref!r}: a diff needs a commit")
    serving = read_ledger(env).stable
    serving_commit = serving.manifest.commit if serving and serving.manifest else None
    commits, paths = compare_commits(serving_commit, source.sha)
    files = compare_release_files(
        env, serving, source, getattr(environment.platform, "values_file", None)
    )
    now = read_secret_versions(env)
    before = serving.manifest.secrets if serving and serving.manifest else {}
    terraform, changes = _terraform(env, source.sha) if plan_infra else ("not asked", [])
    ansible = _ansible(env, source.sha) if check_nodes else "not asked"
    return publish(
        DiffResult(
            environment=env,
            flow_run_id=flow_run.get_id(),
            ref=ref,
            commit=source.sha,
            serving_version=serving.version if serving else None,
            serving_commit=serving_commit,
            commits=commits,
            changed=paths_by_layer(paths),
            values_diff=files["values_diff"],
            chart=files["chart"],
            migrations=files["migrations"],
            secrets=[
                f"{name}: v{before[name]} -> v{version}"
                if before.get(name, version) != version
                else f"{name}: v{version} (unchanged)"
                for name, version in sorted(now.items())
            ],
            terraform=terraform,
            terraform_changes=changes,
            ansible=ansible,
        )
    )


def _terraform(env: str, sha: str) -> tuple[str, list[dict[str, str]]]:
    state: Any = provision(env=env, ref=sha, apply_changes=False, return_state=True)
    if not state.is_completed():
        return f"not planned: {one_line(state.result(raise_on_failure=False))}", []
    planned = state.result()
    return f"{planned.status} ({planned.summary()})", list(planned.plan)


def _ansible(env: str, sha: str) -> str:
    state: Any = configure(env=env, ref=sha, check=True, return_state=True)
    if not state.is_completed():
        return f"not checked: {one_line(state.result(raise_on_failure=False))}"
    return str(state.result().summary())
