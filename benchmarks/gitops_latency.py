"""GitOps latency: a push to develop until staging serves that commit, and the mirror against a clone.

    uv run python benchmarks/gitops_latency.py [--changes 5] [--commits 5]

Everything real on 127.0.0.1: a GitLab-like git remote (git smart HTTP by `git http-backend`,
token in HTTP Basic auth, tests/support/git_remote.py) holding the project, seeded from this
checkout; the control plane's source points at it (SOCIALNET_SOURCE_URL, _TOKEN_FILE).

1. Materialise against clone (the baseline, side by side): for `--commits` fresh commits pushed to
   develop, the control plane's way (`SourceRepository`: fetch into the warm bare mirror, made once
   before as the control plane keeps it, resolve the sha on develop, extract its read-only tree)
   against a plain `git clone --no-checkout` over HTTP of the same repository into an empty folder
   plus `git checkout` of the sha. The order alternates per commit. Medians; goal
   materialize_s <= 0.5 x clone_s.
2. Push -> serving: a Prefect server and a local platform running a renamed copy of
   deployments/environments/local.yaml with staging's release policy (rolling). One untimed
   release first (nothing served yet: cold). Then for each of `--changes` small app changes:
   commit, push to develop, build GitLab's push payload, map it through the receiver's parsing and
   the gitflow mapping (`develop-to-staging`) and run the release flow in-process with the
   launch's tags and parameters (env: this benchmark's environment; provision and configure
   skipped, as tests/integration/release/test_gitops.py does). Timed from the delivery (once
   `git push` returned) to the first round in which all PROBES `/version` answers through the
   edge carry the new version and git sha. The split comes from the run's task runs on the
   Prefect server: `checkout_tasks_s` (the `checkout-source` task runs: fetch + workspace, the
   release's and its deploy's), `build_s` (`build-release`), `roll_s` (end of the build ->
   serving: secrets materialised, migrations, pre-deploy backup, replicas, smoke test) and
   `other_s` (the rest: run creation, checks, the secrets stage, slots); `task_median_s` has
   every task's own seconds (subflows' stand-in tasks left out). Part 1 gives the fetch /
   workspace split of one checkout.

Progress goes to stderr; the last line on stdout is one JSON object:
{"benchmark": "gitops_latency", "median_push_to_serving_s", "materialize_s", "clone_s",
 "materialize_vs_clone_ratio", "fetch_s", "workspace_s", "checkout_tasks_s", "build_s", "roll_s",
 "other_s", ...}
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # run as a script: make `flows`, `tests.support` importable

from socialnet_ops.adapters.source import (  # noqa: E402
    TOKEN_SETTING,
    URL_SETTING,
    SourceRepository,
    cache_root,
    remove_tree,
)
from socialnet_ops.core.paths import state_root  # noqa: E402
from tests.support.git_remote import (  # noqa: E402
    GitRemote,
    ProjectRepo,
    ProjectSeed,
    http_backend_available,
)
from tests.support.prefect import environment_variable  # noqa: E402

ENV = "gitops-bench"
PROJECT = "group/socialnet.git"
BRANCH = "develop"
MARKER = "app/api/gitops_marker.py"
PROBES = 6  # /version answers per round, all from the new release
POLL_S = 0.05
ITERATION_TIMEOUT_S = 300.0  # one release, push to serving
GIT_TIMEOUT_S = 120.0
TASKS_SETTLE_S = 30.0  # task run states reach the server asynchronously (as events)
GOAL_RATIO = 0.5


def log(message: str) -> None:
    print(f"[gitops_latency] {message}", file=sys.stderr, flush=True)


def median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def push_change(project: ProjectRepo, label: str) -> tuple[str, str, float]:
    """A small app change committed and pushed to develop: (sha, marker, push seconds)."""
    marker = f"{label}-{uuid.uuid4().hex[:12]}"
    project.write(MARKER, f'MARKER = "{marker}"\n')
    sha = project.commit(f"app: {marker}")
    started = time.perf_counter()
    project.push(BRANCH)
    return sha, marker, time.perf_counter() - started


# --- 1. materialise with the mirror against a plain clone -----------------------------------------


def timed_git(*args: str | os.PathLike[str], env: dict[str, str]) -> float:
    """`git args`, bounded in time; its wall seconds."""
    started = time.perf_counter()
    done = subprocess.run(
        ["git", *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=GIT_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"git {args[0]} exited {done.returncode}: {done.stderr.strip()}")
    return time.perf_counter() - started


def materialize(cache: Path, sha: str, marker: str) -> dict[str, float]:
    """What `checkout(sha, on=develop)` does, split: fetch, then resolve + extract (workspace)."""
    started = time.perf_counter()
    repository = SourceRepository(cache=cache)
    repository.fetch()
    fetched = time.perf_counter()
    tree = repository.tree(repository.resolve(sha, on=BRANCH), sha)
    ended = time.perf_counter()
    if tree.sha != sha or marker not in (tree.root / MARKER).read_text():
        raise RuntimeError(f"the tree of {sha[:12]} does not hold its change")
    return {"fetch": fetched - started, "workspace": ended - fetched, "total": ended - started}


def clone(remote: GitRemote, url: str, sha: str, marker: str, folder: Path) -> dict[str, float]:
    """`git clone` over HTTP into an empty folder, then the checkout of `sha`."""
    target = folder / f"clone-{sha[:12]}"
    env = remote.env()
    try:
        cloned = timed_git("clone", "--quiet", "--no-checkout", url, target, env=env)
        checked = timed_git("-C", target, "checkout", "--quiet", "--detach", sha, env=env)
        if marker not in (target / MARKER).read_text():
            raise RuntimeError(f"the clone of {sha[:12]} does not hold its change")
    finally:
        shutil.rmtree(target, ignore_errors=True)
    return {"clone": cloned, "checkout": checked, "total": cloned + checked}


def materialize_vs_clone(
    remote: GitRemote, project: ProjectRepo, folder: Path, commits: int
) -> dict[str, Any]:
    cache = folder / "source-cache"
    started = time.perf_counter()
    SourceRepository(cache=cache).fetch()  # the mirror, made once (the control plane keeps it)
    first_fetch = time.perf_counter() - started
    log(f"mirror made by a first fetch in {first_fetch:.2f} s")
    ours: list[dict[str, float]] = []
    theirs: list[dict[str, float]] = []
    try:
        for index in range(commits):
            sha, marker, _ = push_change(project, f"materialize-{index}")
            steps: list[Callable[[], None]] = [
                partial(lambda s, m: ours.append(materialize(cache, s, m)), sha, marker),
                partial(
                    lambda s, m: theirs.append(clone(remote, project.url, s, m, folder)),
                    sha,
                    marker,
                ),
            ]
            for step in steps if index % 2 == 0 else steps[::-1]:  # no order favoured
                step()
            log(
                f"commit {index + 1}/{commits} {sha[:12]}: materialize {ours[-1]['total']:.3f} s "
                f"(fetch {ours[-1]['fetch']:.3f}, workspace {ours[-1]['workspace']:.3f}); "
                f"clone {theirs[-1]['total']:.3f} s (clone {theirs[-1]['clone']:.3f}, "
                f"checkout {theirs[-1]['checkout']:.3f})"
            )
    finally:
        remove_tree(cache)
    materialize_s = median([m["total"] for m in ours])
    clone_s = median([c["total"] for c in theirs])
    return {
        "materialize_s": materialize_s,
        "clone_s": clone_s,
        "materialize_vs_clone_ratio": round(materialize_s / clone_s, 3),
        "fetch_s": median([m["fetch"] for m in ours]),
        "workspace_s": median([m["workspace"] for m in ours]),
        "clone_split_s": {
            "clone_no_checkout": median([c["clone"] for c in theirs]),
            "checkout": median([c["checkout"] for c in theirs]),
        },
        "materialize_runs_s": [round(m["total"], 3) for m in ours],
        "clone_runs_s": [round(c["total"], 3) for c in theirs],
        "mirror_first_fetch_s": round(first_fetch, 3),
    }


# --- 2. push -> serving ---------------------------------------------------------------------------


def write_catalog(folder: Path) -> None:
    """The local environment, renamed, with staging's release policy (rolling)."""
    document = yaml.safe_load((REPO_ROOT / "deployments/environments/local.yaml").read_text())
    document["name"] = ENV
    document["description"] = "gitops_latency benchmark: staging's policy on the local platform"
    document["platform"].update({"ready_timeout": "60s", "drain_timeout": "3s"})
    document["release"] = {"strategy": "rolling", "rollback_on_failure": True}
    document["backup"]["bucket"] = f"socialnet-backups-{ENV}"
    (folder / f"{ENV}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))


@contextlib.contextmanager
def catalog() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="sngo-catalog-"))
    write_catalog(folder)
    try:
        with environment_variable("SOCIALNET_ENVIRONMENTS_DIR", str(folder)):
            yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class ServingWatch:
    """Polls the edge's /version from a thread; the first moment (time.time()) a whole round of
    PROBES answers carries `expected` (version, git sha)."""

    def __init__(self, edge: str, expected: tuple[str, str], timeout: float) -> None:
        self.edge, self.expected, self.timeout = edge, expected, timeout
        self.at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="serving-watch", daemon=True)

    def __enter__(self) -> ServingWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def wait(self, timeout: float) -> float | None:
        self._thread.join(timeout=timeout)
        return self.at

    def _watch(self) -> None:
        deadline = time.monotonic() + self.timeout
        with httpx.Client(base_url=self.edge, timeout=5) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    answers = [client.get("/version") for _ in range(PROBES)]
                    seen = {
                        (answer.json()["version"], answer.json()["git_sha"])
                        if answer.status_code == 200
                        else ("", str(answer.status_code))
                        for answer in answers
                    }
                except (httpx.HTTPError, ValueError, KeyError):
                    seen = set()
                if seen == {self.expected}:
                    self.at = time.time()
                    return
                time.sleep(POLL_S)


def _timestamp(value: datetime | None) -> float:
    if value is None:
        raise RuntimeError("a finished task run without start or end time")
    return value.timestamp()


def task_runs_of(tag: str, wanted: set[str]) -> list[Any]:
    """The finished task runs of a delivery's runs (their tags carry its id). Task run states
    reach the server asynchronously (as events): polled until the `wanted` names are there and
    no new one came for a second."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterTags
    from prefect.events.worker import EventsWorker

    EventsWorker.drain_all(timeout=10)
    deadline = time.monotonic() + TASKS_SETTLE_S
    finished: list[Any] = []
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_task_runs(
                task_run_filter=TaskRunFilter(tags=TaskRunFilterTags(all_=[tag])), limit=200
            )
            now = [run for run in runs if run.end_time is not None]
            if len(now) == len(finished) and wanted <= {_name(run) for run in now}:
                return now
            finished = now
            time.sleep(1.0)
    raise RuntimeError(f"the task runs {sorted(wanted)} of {tag} did not reach the server")


def _name(run: Any) -> str:
    return str(run.name).rsplit("-", 1)[0]  # "checkout-source-0a1" -> "checkout-source"


def _seconds(run: Any) -> float:
    return _timestamp(run.end_time) - _timestamp(run.start_time)


def phase_split(tag: str, delivered: float, serving: float) -> dict[str, Any]:
    """Seconds per phase of one delivery, from its task runs on the Prefect server."""
    runs = task_runs_of(tag, {"checkout-source", "build-release"})
    checkouts = [run for run in runs if _name(run) == "checkout-source"]
    builds = [run for run in runs if _name(run) == "build-release"]
    checkout_s = sum(_seconds(run) for run in checkouts)
    build_s = sum(_seconds(run) for run in builds)
    roll_s = serving - max(_timestamp(run.end_time) for run in builds)
    per_task: dict[str, float] = {}
    for run in runs:
        if run.state is not None and run.state.state_details.child_flow_run_id is not None:
            continue  # the parent's stand-in task of a subflow (deploy, secrets): not a task
        per_task[_name(run)] = per_task.get(_name(run), 0.0) + _seconds(run)
    return {
        "checkout_tasks": checkout_s,
        "checkout_tasks_count": len(checkouts),
        "build": build_s,
        "roll": roll_s,
        "other": (serving - delivered) - checkout_s - build_s - roll_s,
        "tasks": per_task,
    }


def deliver(sha: str, timeout: float) -> dict[str, Any]:
    """Run what the gitflow mapping starts for a push of `sha` to develop, as the launcher would
    start it (its tags and parameters), on this benchmark's environment; the run's result."""
    from prefect import tags

    from flows.release import release
    from socialnet_ops.core.gitflow import launches, load_mapping, matching_rules
    from tests.integration.webhooks import payloads
    from webhooks.gitlab import parse_event

    event = parse_event("push", payloads.push(BRANCH, sha), f"bench-{uuid.uuid4().hex[:12]}")
    mapping = load_mapping()
    rules, reason = matching_rules(mapping, event)
    if not rules:
        raise RuntimeError(f"the gitflow mapping starts nothing for a push to {BRANCH}: {reason}")
    (launch,) = launches(mapping, rules[0], event)
    if launch.deployment.split("/")[0] != "release":
        raise RuntimeError(f"a push to {BRANCH} starts {launch.deployment}, not a release")
    parameters = {
        **launch.parameters,
        "env": ENV,
        "provision_infra": False,
        "configure_nodes": False,
    }
    with tags(*launch.tags):
        released = release.with_options(timeout_seconds=timeout)(**parameters)
    return {
        "version": released.version,
        "stages": released.stages,
        "event_id": event.delivery_id,
    }


def push_to_serving(project: ProjectRepo, edge: str) -> dict[str, float | Any]:
    """One small app change: pushed, delivered, released; seconds from delivery to serving."""
    sha, _, push_s = push_change(project, "release")
    version = f"{BRANCH}-{sha[:8]}"
    with ServingWatch(edge, (version, sha), ITERATION_TIMEOUT_S + 30) as watch:
        delivered = time.time()
        result = deliver(sha, ITERATION_TIMEOUT_S)
        ended = time.time()
        serving = watch.wait(timeout=30)
    if serving is None:
        raise RuntimeError(f"{edge} never served {version} ({sha[:12]}) to all {PROBES} probes")
    if result["version"] != version or result["stages"].get(f"deploy {ENV}") != "ok":
        raise RuntimeError(f"the release of {version} did not deploy: {result['stages']}")
    split = phase_split(f"gitlab.event_id:{result['event_id']}", delivered, serving)
    return {
        "sha": sha,
        "push": push_s,
        "to_serving": serving - delivered,
        "flow": ended - delivered,
        **split,
    }


def push_releases(project: ProjectRepo, changes: int) -> dict[str, Any]:
    from flows.common import ensure_release_limits
    from socialnet_ops.adapters.s3 import ensure_bucket_exists
    from socialnet_ops.core.environments import load_environment
    from socialnet_ops.platforms import backup_target_for
    from tests.support.prefect import running_local_platform

    with catalog(), running_local_platform(load_environment(ENV), prefix="sngo-") as platform:
        try:
            ensure_release_limits([ENV])
            store = backup_target_for(load_environment(ENV)).store
            ensure_bucket_exists(store.model_copy(update={"create_bucket": True}))
            edge = platform.endpoints().edge_url
            log(f"platform up at {edge}; first release (cold, untimed in the median)")
            first = push_to_serving(project, edge)
            log(f"first release served in {first['to_serving']:.1f} s")
            timed: list[dict[str, Any]] = []
            for index in range(changes):
                timed.append(push_to_serving(project, edge))
                last = timed[-1]
                log(
                    f"change {index + 1}/{changes} {last['sha'][:12]}: served "
                    f"{last['to_serving']:.2f} s after delivery (checkout "
                    f"{last['checkout_tasks']:.2f}, build {last['build']:.2f}, roll "
                    f"{last['roll']:.2f}, other {last['other']:.2f}; flow ended at "
                    f"{last['flow']:.2f} s)"
                )
        finally:
            remove_tree(cache_root())  # read-only commit trees in the platform's state folder
    task_names = sorted({name for run in timed for name in run["tasks"]})
    return {
        "median_push_to_serving_s": median([run["to_serving"] for run in timed]),
        "push_to_serving_runs_s": [round(run["to_serving"], 2) for run in timed],
        "checkout_tasks_s": median([run["checkout_tasks"] for run in timed]),
        "checkout_tasks_per_release": timed[0]["checkout_tasks_count"],
        "build_s": median([run["build"] for run in timed]),
        "roll_s": median([run["roll"] for run in timed]),
        "other_s": median([run["other"] for run in timed]),
        "flow_s": median([run["flow"] for run in timed]),
        "git_push_s": median([run["push"] for run in timed]),
        "task_median_s": {
            name: median([run["tasks"].get(name, 0.0) for run in timed]) for name in task_names
        },
        "first_release_to_serving_s": round(first["to_serving"], 2),
    }


# --- the benchmark --------------------------------------------------------------------------------


def repository_size(bare: Path) -> dict[str, Any]:
    counted = subprocess.run(
        ["git", f"--git-dir={bare}", "count-objects", "-v"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    values = dict(line.split(": ", 1) for line in counted.splitlines() if ": " in line)
    files = subprocess.run(
        ["git", f"--git-dir={bare}", "ls-tree", "-r", "--name-only", BRANCH],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    return {"files": len(files), "pack_kib": int(values.get("size-pack", 0))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--changes", type=int, default=5, help="timed pushes to serving")
    parser.add_argument("--commits", type=int, default=5, help="materialise/clone comparisons")
    parser.add_argument(
        "--skip-release", action="store_true", help="only materialise against clone"
    )
    parser.add_argument(
        "--older-commits", type=int, default=3000, help="generated history before the real one"
    )
    options = parser.parse_args()
    if not http_backend_available():
        raise SystemExit("git http-backend is not installed (git's smart HTTP server)")

    began = time.monotonic()
    load_before = os.getloadavg()[0]
    stdout = sys.stdout
    # Under the state folder, where the control plane keeps its mirror and trees (.local/ by
    # default): on some machines /tmp is a much slower file system for many small files.
    state_root().mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="sngo-", dir=state_root()))
    token = "glpat-" + secrets.token_urlsafe(24)
    token_file = folder / "token"
    token_file.touch(mode=0o600)
    token_file.write_text(token + "\n")
    result: dict[str, Any] = {"benchmark": "gitops_latency"}
    # Flows and tools may print: stdout is kept for the one JSON line.
    try:
        with (
            contextlib.redirect_stdout(sys.stderr),
            GitRemote(folder / "repos", token, token_file=token_file) as remote,
        ):
            # A project with a past, as a clone gets it: this checkout's own commits after
            # `--older-commits` generated ones (a team's repository after a few years).
            seed = ProjectSeed(folder / "seed", history=True, older_commits=options.older_commits)
            project = ProjectRepo.create(remote, PROJECT, seed, folder / "project")
            log(f"project seeded at {project.url} ({seed.sha[:12]})")
            # The same with this checkout's history only (a young repository), for comparison.
            young_seed = ProjectSeed(folder / "young-seed", history=True)
            young = ProjectRepo.create(remote, "group/young.git", young_seed, folder / "young")
            with (
                environment_variable(URL_SETTING, young.url),
                environment_variable(TOKEN_SETTING, str(token_file)),
            ):
                small = materialize_vs_clone(remote, young, folder / "y", options.commits)
                small["repository"] = repository_size(young.bare)
            with (
                environment_variable(URL_SETTING, project.url),
                environment_variable(TOKEN_SETTING, str(token_file)),
            ):
                compared = materialize_vs_clone(remote, project, folder, options.commits)
                released: dict[str, Any] = {}
                if not options.skip_release:
                    from prefect.testing.utilities import prefect_test_harness

                    with prefect_test_harness(server_startup_timeout=120):
                        released = push_releases(project, options.changes)
            size = repository_size(project.bare)
    finally:
        remove_tree(folder)
    result |= {
        "median_push_to_serving_s": released.get("median_push_to_serving_s"),
        "materialize_s": compared.pop("materialize_s"),
        "clone_s": compared.pop("clone_s"),
        "materialize_vs_clone_ratio": compared.pop("materialize_vs_clone_ratio"),
        "baseline": "git clone --no-checkout over HTTP + git checkout of the sha (clone_s)",
        "goal_ratio": GOAL_RATIO,
        # the split of a warm-mirror checkout (part 1), then of push -> serving (part 2)
        "fetch_s": compared.pop("fetch_s"),
        "workspace_s": compared.pop("workspace_s"),
        "checkout_tasks_s": released.pop("checkout_tasks_s", None),
        "build_s": released.pop("build_s", None),
        "roll_s": released.pop("roll_s", None),
        "other_s": released.pop("other_s", None),
    }
    result["meets_goal"] = result["materialize_vs_clone_ratio"] <= GOAL_RATIO
    released.pop("median_push_to_serving_s", None)
    result |= compared | released
    result["young_repository"] = {
        key: small[key]
        for key in ("materialize_s", "clone_s", "materialize_vs_clone_ratio", "repository")
    }
    result |= {
        "repository": size,
        "changes": options.changes,
        "commits": options.commits,
        "older_commits": options.older_commits,
        "probes": PROBES,
        "load_average_1m": round(load_before, 1),
        "cores": os.cpu_count(),
        "total_s": round(time.monotonic() - began, 1),
    }
    print(json.dumps(result), file=stdout, flush=True)


if __name__ == "__main__":
    main()
