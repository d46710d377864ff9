"""Drift check of three environments at once versus one alone (real Terraform, AWS emulator).

    uv run python benchmarks/drift_check.py [--repeat 2]

Three environments made from `local` (bench-a, bench-b, bench-c, each its own state, zone and
bucket) are provisioned once against a private moto server, then the drift flow plans one of
them, then all three concurrently. Plans mostly wait (provider start-up, API round trips), so
three on two cores should take at most 1.5 times one. Progress goes to stderr; the last line on
stdout is one JSON object:
{"benchmark": "drift_check", "one_env_s": ..., "three_envs_s": ..., "ratio": ...}
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import yaml  # noqa: E402

ENVIRONMENTS = ("bench-a", "bench-b", "bench-c")


def say(message: str) -> None:
    print(f"[drift_check] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_emulator(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """moto in its own process, as the local platform runs it (not competing with this one)."""
    port = free_port()
    binary = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    log = (workdir / "moto.log").open("wb")
    process = subprocess.Popen(
        [binary, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)  # noqa: S310 - loopback
            return process, endpoint
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("moto_server did not start")


def write_catalog(folder: Path) -> None:
    base = yaml.safe_load((REPO_ROOT / "deployments" / "environments" / "local.yaml").read_text())
    shutil.copytree(REPO_ROOT / "deployments" / "environments", folder)
    for name in ENVIRONMENTS:
        document = json.loads(json.dumps(base))
        document["name"] = name
        document["domain"] = f"www.{name}.test"
        document["dns_zone"] = f"{name}.test"
        document["terraform"]["backend"]["key"] = f"{name}/terraform.tfstate"
        document["backup"]["bucket"] = f"socialnet-backups-{name}"
        document.pop("drift_schedule", None)
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(document))


def timed_drift(envs: list[str]) -> float:
    from flows.drift import drift

    started = time.monotonic()
    result = drift(envs=envs)
    elapsed = time.monotonic() - started
    if any(stack.status != "clean" for stack in result.stacks.values()):
        raise SystemExit(f"expected clean environments, got {result.summary()}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=2, help="timed runs of each; best kept")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="sndrift-"))
    emulator, endpoint = start_emulator(workdir)
    write_catalog(workdir / "environments")
    os.environ.update(
        {
            "SOCIALNET_STATE_DIR": str(workdir / "state"),
            "SOCIALNET_ENVIRONMENTS_DIR": str(workdir / "environments"),
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_EC2_METADATA_DISABLED": "true",
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        }
    )
    from prefect.testing.utilities import prefect_test_harness

    from flows.provision import provision

    try:
        with prefect_test_harness(server_startup_timeout=120):
            say(f"provisioning {', '.join(ENVIRONMENTS)} against {endpoint} (not timed)")
            failures: list[BaseException] = []

            def provision_one(name: str) -> None:
                try:
                    provision(env=name)
                except BaseException as error:
                    failures.append(error)

            # The state bucket is shared: create it once before the concurrent applies.
            provision_one(ENVIRONMENTS[0])
            threads = [
                threading.Thread(target=provision_one, args=(name,)) for name in ENVIRONMENTS[1:]
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            if failures:
                raise SystemExit(f"provisioning failed: {failures[0]}")
            say("warming the drift working directories (not timed)")
            timed_drift(list(ENVIRONMENTS))

            one: list[float] = []
            three: list[float] = []
            for round_ in range(args.repeat):
                seconds = timed_drift([ENVIRONMENTS[0]])
                one.append(seconds)
                seconds = timed_drift(list(ENVIRONMENTS))
                three.append(seconds)
                say(f"round {round_ + 1}: one {one[-1]:.1f} s, three {three[-1]:.1f} s")
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)

    one_s, three_s = min(one), min(three)
    print(
        json.dumps(
            {
                "benchmark": "drift_check",
                "one_env_s": round(one_s, 2),
                "three_envs_s": round(three_s, 2),
                "ratio": round(three_s / one_s, 2),
                "goal_ratio": 1.5,
                "runs": args.repeat,
                "cores": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
