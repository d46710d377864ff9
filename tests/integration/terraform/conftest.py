"""Real Terraform and the real AWS provider against an in-process AWS emulator (moto server).

One stack (`local`) is applied once for the package and shared by the tests, which leave it as
they found it; applying takes about a minute, mostly the provider's S3 lifecycle polling.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from moto.server import ThreadedMotoServer

from socialnet_ops.adapters.terraform import provider_mirror
from socialnet_ops.core.paths import repo_root
from socialnet_ops.core.results import ProvisionResult
from tests.support.prefect import socialnet_events, state_root
from tests.support.requirements import unavailable

REGION = "eu-west-3"
FAKE_KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-secret"}


def require_terraform() -> None:
    """Terraform and its provider mirror; in CI their absence is a broken runner, not a skip."""
    problem = None
    if shutil.which("terraform") is None:
        problem = "terraform is not on PATH"
    elif provider_mirror() is None:
        problem = "no Terraform provider mirror (/opt/tf-plugins or SOCIALNET_TF_PROVIDER_MIRROR)"
    if problem:
        unavailable(problem)


@contextmanager
def environ(**values: str | None) -> Iterator[None]:
    previous = {name: os.environ.get(name) for name in values}
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@dataclass
class Emulator:
    endpoint: str

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            **{
                "aws_access_key_id": FAKE_KEYS["AWS_ACCESS_KEY_ID"],
                "aws_secret_access_key": FAKE_KEYS["AWS_SECRET_ACCESS_KEY"],
            },
        )

    def instances(self, environment: str) -> list[dict[str, Any]]:
        pages = self.client("ec2").describe_instances(
            Filters=[
                {"Name": "tag:Environment", "Values": [environment]},
                {"Name": "instance-state-name", "Values": ["pending", "running"]},
            ]
        )
        return [item for page in pages["Reservations"] for item in page["Instances"]]

    def vpcs(self, environment: str) -> list[dict[str, Any]]:
        return self.client("ec2").describe_vpcs(
            Filters=[{"Name": "tag:Environment", "Values": [environment]}]
        )["Vpcs"]


@pytest.fixture(scope="package")
def emulator() -> Iterator[Emulator]:
    require_terraform()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    # Nothing may look for credentials on the network (instance metadata) during the tests.
    with environ(AWS_ENDPOINT_URL=endpoint, AWS_EC2_METADATA_DISABLED="true", **FAKE_KEYS):
        try:
            yield Emulator(endpoint)
        finally:
            server.stop()


@pytest.fixture(scope="package")
def terraform_state(emulator: Emulator) -> Iterator[Path]:
    with state_root("sntf-") as root:
        yield root


@contextmanager
def catalog(
    tmp_path: Path, name: str, change: Callable[[dict[str, Any]], None], based_on: str | None = None
) -> Iterator[Path]:
    """A copy of the environment catalog where `name` (made from `based_on`) is changed."""
    folder = tmp_path / "environments"
    shutil.copytree(repo_root() / "deployments" / "environments", folder)
    document = yaml.safe_load((folder / f"{based_on or name}.yaml").read_text())
    document["name"] = name
    change(document)
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(document))
    with environ(SOCIALNET_ENVIRONMENTS_DIR=str(folder)):
        yield folder


def terraform_processes(marker: str, verb: str) -> list[int]:
    """Our terraform processes running `verb` with `marker` (a path of the test) in their line."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            words = (entry / "cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        if (
            words
            and words[0].endswith("terraform")
            and verb in words
            and any(marker in word for word in words)
        ):
            found.append(int(entry.name))
    return found


@dataclass
class AppliedStack:
    interrupted: BaseException | None
    result: ProvisionResult
    events: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    interrupted_after: str = ""


@pytest.fixture(scope="package")
def applied_local(prefect_server: None, emulator: Emulator, terraform_state: Path) -> AppliedStack:
    """`local` provisioned the hard way: the first apply is interrupted half-way, a rerun finishes."""
    from flows.provision import provision

    stop = threading.Event()
    what: list[str] = []

    def interrupt_once_the_vpc_exists() -> None:
        while not stop.is_set():
            pids = terraform_processes(str(terraform_state / "local/terraform/provision"), "apply")
            if pids and emulator.vpcs("local"):
                os.kill(pids[0], signal.SIGINT)
                what.append("vpc created")
                return
            time.sleep(0.2)

    watcher = threading.Thread(target=interrupt_once_the_vpc_exists, daemon=True)
    watcher.start()
    interrupted: BaseException | None = None
    started = time.monotonic()
    try:
        # One operation at a time: the interrupt then cancels at most one create in flight, the
        # window in which the provider can leave an object it created but never recorded.
        with environ(TF_CLI_ARGS_apply="-parallelism=1"):
            provision(env="local")
    except Exception as error:
        interrupted = error
    finally:
        stop.set()
        watcher.join()
    interrupted_at = time.monotonic()
    rerun_started = datetime.now(UTC)
    result = provision(env="local")
    events = [
        (
            event["event"].removeprefix("socialnet."),
            event["payload"]["environment"],
            event["payload"],
        )
        for event in socialnet_events("infra.applied", rerun_started)
    ]
    print(f"interrupted run {interrupted_at - started:.1f} s, rerun {result.seconds}")
    return AppliedStack(interrupted, result, events, ",".join(what))
