"""The app's images: cold build, rebuild after an app-only change, deploys as containers vs processes.

Prints one JSON line: {"benchmark": "image_build", "cold_build_s", "rebuild_s", "rebuild_ratio"
(goal <= 0.2), "deploy_containers_s", "deploy_processes_s", "deploy_ratio" (goal <= 1.3),
"zero_downtime_failed" (must be 0), "image_sizes_mb"}.

The cold build builds both images with no layer cache (the bases and the API's wheels are made
once at install, as on a build machine). Each deploy is a rolling deploy of the stable track on
one local platform, from one release to the next, the median of ROUNDS; the last container deploy
runs under steady load through the edge.
"""

from __future__ import annotations

import json
import logging
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from socialnet_ops.adapters import images
from socialnet_ops.adapters.builds import build_release
from socialnet_ops.adapters.migrations import run_alembic
from socialnet_ops.control.load import SteadyLoad
from socialnet_ops.core.paths import repo_root
from socialnet_ops.core.release import Build, SourceTree

ROUNDS = 3
RATE = 50.0


# The migration's progress lines are not the benchmark's: a logger that drops them.
_QUIET = logging.getLogger("benchmarks.image_build.quiet")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False


def _context(folder: Path) -> Path:
    shutil.copytree(
        repo_root() / "app", folder / "app", ignore=shutil.ignore_patterns("__pycache__")
    )
    return folder


def _build_both(context: Path, tag: str, no_cache: bool) -> float:
    engine = images.ContainerEngine()
    labels = images.oci_labels(tag, None, str(repo_root()))
    started = time.monotonic()
    for component in images.COMPONENTS:
        engine.build(context, component, tag, labels, no_cache=no_cache)
    return time.monotonic() - started


def _timed_deploy(platform: object, build: Build) -> float:
    started = time.monotonic()
    platform.deploy(build)  # type: ignore[attr-defined]
    return time.monotonic() - started


def main() -> None:
    from tests.support.prefect import running_local_platform

    problem = images.engine_problem()
    if problem:
        raise SystemExit(f"image_build: {problem}")
    with tempfile.TemporaryDirectory(prefix="snb-images-") as scratch:
        context = _context(Path(scratch))
        cold = _build_both(context, "bench-cold", no_cache=True)
        main_py = context / "app" / "api" / "main.py"
        # Unique to this run: an image of the same files would be reused, not rebuilt.
        main_py.write_text(main_py.read_text() + f"\n# an app-only change {time.time_ns()}\n")
        rebuild = _build_both(context, "bench-rebuild", no_cache=False)

        with running_local_platform(prefix="snb-") as platform:
            registry = platform.image_registry()
            assert registry is not None, platform.status().runtime
            source = SourceTree(root=repo_root(), sha=None, ref="worktree", url=str(repo_root()))
            env = platform.environment
            containers = [
                build_release(env, f"c{n}", source, None, registry)[0] for n in range(ROUNDS + 2)
            ]
            processes = [
                Build(f"p{n}", f"sha-p{n}", "worktree", path=build.path)
                for n, build in enumerate(containers)
            ]
            run_alembic(containers[0], platform.database_env(), "upgrade", "head", log=_QUIET)
            sizes = {
                component: images.ContainerEngine().size_mb(
                    images.ContainerEngine().pull(reference)
                )
                for component, reference in containers[0].images.items()
            }
            platform.deploy(processes[0])
            process_times = [_timed_deploy(platform, b) for b in processes[1 : ROUNDS + 1]]
            platform.deploy(containers[0])
            container_times = [_timed_deploy(platform, b) for b in containers[1:ROUNDS]]
            load = SteadyLoad(platform.endpoints().edge_url, ["/version"], rate=RATE).start()
            time.sleep(3)
            container_times.append(_timed_deploy(platform, containers[ROUNDS]))
            time.sleep(2)
            samples = load.stop()

    deploy_containers = statistics.median(container_times)
    deploy_processes = statistics.median(process_times)
    result = {
        "benchmark": "image_build",
        "cold_build_s": round(cold, 1),
        "rebuild_s": round(rebuild, 1),
        "rebuild_ratio": round(rebuild / cold, 3),
        "deploy_containers_s": round(deploy_containers, 1),
        "deploy_processes_s": round(deploy_processes, 1),
        "deploy_ratio": round(deploy_containers / deploy_processes, 2),
        "zero_downtime_failed": sum(1 for sample in samples if not sample.ok),
        "zero_downtime_sent": len(samples),
        "image_sizes_mb": sizes,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
