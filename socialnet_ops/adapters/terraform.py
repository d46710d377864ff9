"""Terraform's client: the provider mirror, the working directory a stack runs in, AWS (endpoint,
credentials, the state bucket) and the `terraform` CLI with every line into the run log.

`python-terraform` is not used: it buffers a command's output until the command ends (nothing
would reach the Prefect UI while an apply runs) and its defaults break on Terraform 1.x. The CLI's
own JSON (`show -json`, `output -json`) gives the structured parts, read by
`socialnet_ops.core.terraform`. The steps built on this (plan, apply, drift) are in
`terraform_plans`; `tasks/terraform.py` wraps them as tasks.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from socialnet_ops.adapters.postgres import RunLog
from socialnet_ops.adapters.process import ToolError, stream
from socialnet_ops.core.environments import Environment, load_environment
from socialnet_ops.core.network import is_loopback
from socialnet_ops.core.paths import environment_state_dir, repo_root
from socialnet_ops.core.terraform import (
    MissingCredentialsError,
    StateLockedError,
    TerraformConfigError,
    TerraformError,
    catalog_source,
    error_block,
    is_lock_error,
    lock_wait,
    parse_lock_holder,
)

TERRAFORM = "terraform"
MIRROR_SETTING = "SOCIALNET_TF_PROVIDER_MIRROR"
# Where the machine image keeps its provider mirror; used when it holds registry.terraform.io.
DEFAULT_MIRROR = Path("/opt/tf-plugins")
# The local emulator accepts any key; real credentials must never be sent to it.
EMULATOR_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "socialnet-local",
    "AWS_SECRET_ACCESS_KEY": "socialnet-local-emulator",
}
# How long another run on this machine may keep a working directory before we give up.
WORKSPACE_WAIT_SECONDS = 900

# Asks the local platform for its AWS emulator's endpoint (the platforms sit above the adapters).
Emulator = Callable[[Environment], str]


# --- settings: provider mirror, CLI configuration, endpoint ---------------------------------


def provider_mirror(environ: Mapping[str, str] | None = None) -> Path | None:
    """The filesystem mirror of providers, or None to use the public registry.

    `SOCIALNET_TF_PROVIDER_MIRROR` names the mirror root (the folder holding registry.terraform.io);
    `none` or an empty value forces the registry; unset autodetects the machine image's mirror.
    """
    environ = os.environ if environ is None else environ
    setting = environ.get(MIRROR_SETTING)
    if setting is None:
        return DEFAULT_MIRROR if (DEFAULT_MIRROR / "registry.terraform.io").is_dir() else None
    if setting.strip().lower() in {"", "none"}:
        return None
    mirror = Path(setting).expanduser()
    if not (mirror / "registry.terraform.io").is_dir():
        raise TerraformConfigError(
            f"{MIRROR_SETTING}={setting}: no registry.terraform.io folder in it; point it at the "
            "mirror root (the parent of registry.terraform.io) or set it to 'none' for the registry"
        )
    return mirror


def render_cli_config(mirror: Path | None) -> str:
    """The CLI configuration file Terraform reads through TF_CLI_CONFIG_FILE."""
    lines = ["# Written by socialnet-ops for this working directory; do not edit.", ""]
    if mirror is None:
        lines.append("# No provider mirror: providers come from their registries.")
    else:
        # With the unpacked mirror layout, init links the provider instead of copying 600 MB,
        # so no plugin cache is needed (and none may shadow the mirror).
        lines += [
            "provider_installation {",
            "  filesystem_mirror {",
            f"    path    = {json.dumps(str(mirror))}",
            '    include = ["registry.terraform.io/*/*"]',
            "  }",
            "  direct {",
            '    exclude = ["registry.terraform.io/*/*"]',
            "  }",
            "}",
        ]
    return "\n".join(lines) + "\n"


# --- the working directory ----------------------------------------------------------------------


@dataclass(frozen=True)
class Workspace:
    """Where one environment's Terraform runs: a copy of the code, its data dir, its plans.

    The repository tree is never written: the code is copied under `.local/<env>/terraform/<use>/`
    (modules too, since stacks reach them by relative path) and TF_DATA_DIR points beside it.
    """

    environment: str
    stack: str  # e.g. infrastructure/terraform/stacks/staging
    root: Path
    # The tree the code is copied from: a commit's (the run's source) or the working tree.
    source_root: Path = field(default_factory=repo_root)

    @classmethod
    def of(cls, environment: Environment, use: str, source_root: Path | None = None) -> Workspace:
        return cls(
            environment=environment.name,
            stack=environment.terraform.stack,
            root=environment_state_dir(environment.name) / "terraform" / use,
            source_root=source_root or repo_root(),
        )

    @property
    def code(self) -> Path:
        return self.root / "code"

    @property
    def source_tree(self) -> Path:
        """The terraform tree the stack lives in: the stack's `stacks/` parent's parent."""
        stack = self.source_root / self.stack
        return stack.parent.parent

    @property
    def stack_dir(self) -> Path:
        stack = self.source_root / self.stack
        return self.code / stack.relative_to(self.source_tree)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def plan_file(self) -> Path:
        return self.root / "plans" / "current.tfplan"

    @property
    def cli_config(self) -> Path:
        return self.root / "terraform.tfrc"

    @property
    def variables_file(self) -> Path:
        return self.stack_dir / "socialnet.auto.tfvars.json"

    @property
    def validated_marker(self) -> Path:
        return self.root / "validated.sha256"

    @property
    def initialized_marker(self) -> Path:
        return self.root / "initialized.sha256"

    def is_initialized(self) -> bool:
        """The data dir still holds what `init` made: the backend settings and the providers."""
        return (self.data_dir / "terraform.tfstate").is_file() and (
            self.data_dir / "providers"
        ).is_dir()

    @property
    def lock_file(self) -> Path:
        return self.root / ".workspace.lock"


def check_stack(environment: Environment, source: str, root: Path | None = None) -> Path:
    stack = (root or repo_root()) / environment.terraform.stack
    if not (stack / "versions.tf").is_file():
        raise TerraformConfigError(
            f"{source}: terraform.stack: {environment.terraform.stack} is not a Terraform stack "
            "(no versions.tf there)"
        )
    if stack.parent.name != "stacks":
        raise TerraformConfigError(
            f"{source}: terraform.stack: {environment.terraform.stack} must sit in a stacks/ "
            "folder beside modules/"
        )
    return stack


def sync_code(workspace: Workspace) -> None:
    """Refresh the copy of the Terraform tree, keeping the dependency lock file of earlier runs."""
    lock = workspace.stack_dir / ".terraform.lock.hcl"
    kept = lock.read_text() if lock.exists() else None
    if workspace.code.exists():
        shutil.rmtree(workspace.code)
    shutil.copytree(
        workspace.source_tree,
        workspace.code,
        ignore=shutil.ignore_patterns(".terraform", "*.tfstate*", "*.tfplan", "*.auto.tfvars.json"),
    )
    if kept is not None:
        lock.write_text(kept)
    workspace.plan_file.parent.mkdir(parents=True, exist_ok=True)
    workspace.data_dir.mkdir(parents=True, exist_ok=True)


def code_fingerprint(
    workspace: Workspace, terraform_version: str, *, with_variables: bool = True
) -> str:
    """What `terraform validate` depends on: the copied code, the locked providers, Terraform."""
    digest = hashlib.sha256(f"{workspace.stack}\0{terraform_version}\0".encode())
    for path in sorted(workspace.code.rglob("*")):
        if path.is_file() and (
            path.suffix in {".tf", ".hcl"}
            or (with_variables and path.name.endswith(".tfvars.json"))
        ):
            digest.update(str(path.relative_to(workspace.code)).encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def init_fingerprint(workspace: Workspace, terraform_version: str, settings: Sequence[str]) -> str:
    """What `terraform init` depends on: code and lock file (not variables), backend, CLI config."""
    digest = hashlib.sha256(
        code_fingerprint(workspace, terraform_version, with_variables=False).encode()
    )
    for part in (*settings, workspace.cli_config.read_text()):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()


def terraform_environ(
    workspace: Workspace, endpoint: str | None, mirror: Path | None
) -> dict[str, str]:
    """Environment variables of every terraform command in this workspace."""
    environ = {
        "TF_CLI_CONFIG_FILE": str(workspace.cli_config),
        "TF_DATA_DIR": str(workspace.data_dir),
        "TF_IN_AUTOMATION": "1",
        "TF_INPUT": "0",
        "CHECKPOINT_DISABLE": "1",  # no version check calls home
        # Terraform and the AWS provider are short-lived and allocate heavily while decoding
        # provider schemas: a quarter of the collections costs ~30% less CPU for ~10% more
        # memory, which is what lets concurrent plans share two cores. A user's GOGC wins.
        "GOGC": os.environ.get("GOGC", "400"),
    }
    if endpoint:
        environ["AWS_ENDPOINT_URL"] = endpoint
    return environ


# --- variables and backend settings ------------------------------------------------------------

_VARIABLE_BLOCK = re.compile(r'^\s*variable\s+"([A-Za-z_][A-Za-z0-9_-]*)"', re.MULTILINE)


def declared_variables(stack_dir: Path) -> set[str]:
    """Names of the stack's input variables (its `variable "x"` blocks)."""
    names: set[str] = set()
    for path in sorted(stack_dir.glob("*.tf")):
        names.update(_VARIABLE_BLOCK.findall(path.read_text()))
    return names


def backend_arguments(environment: Environment, *, emulated: bool) -> list[str]:
    backend = environment.terraform.backend
    arguments = [
        f"-backend-config=bucket={backend.bucket}",
        f"-backend-config=key={backend.key}",
        f"-backend-config=region={backend.region or environment.cloud.region}",
    ]
    if emulated:
        arguments.append("-backend-config=use_path_style=true")
    return arguments


# --- where AWS is and who we are there -----------------------------------------------------------


def local_emulator_endpoint(environment: Environment, emulator: Emulator | None) -> str:
    """The local platform's AWS emulator (moto), for environments whose cloud.endpoint is `local`."""

    try:
        if emulator is None:
            raise LookupError("no local platform was asked")
        return emulator(environment)
    except Exception as error:
        raise TerraformConfigError(
            f"{catalog_source(environment)}: cloud.endpoint: local, but the local platform's AWS "
            f"emulator is not reachable ({error}); start it with `make up`"
        ) from None


def endpoint_for(
    environment: Environment, override: str | None = None, emulator: Emulator | None = None
) -> str | None:
    """The AWS endpoint: the explicit override, else AWS_ENDPOINT_URL, else the catalog's.

    An override may only be the catalog's endpoint or an emulator on this machine: anywhere else,
    requests signed with the environment's credentials would leave for a host nobody chose.
    """
    source, chosen = ("endpoint", override) if override else (
        "AWS_ENDPOINT_URL", os.environ.get("AWS_ENDPOINT_URL")
    )  # fmt: skip
    if chosen:
        if chosen != environment.cloud.endpoint and not is_loopback(chosen):
            raise TerraformConfigError(
                f"{environment.name}: {source} {chosen!r} is neither the catalog's AWS endpoint "
                f"({environment.cloud.endpoint or 'AWS itself'}) nor an emulator on 127.0.0.1; "
                "signed requests go nowhere else"
            )
        return chosen
    if environment.cloud.endpoint == "local":
        return local_emulator_endpoint(environment, emulator)
    return environment.cloud.endpoint


def aws_environ(environment: Environment, endpoint: str | None) -> dict[str, str]:
    """Extra environment of Terraform and boto3: the endpoint and, for the emulator, its keys."""
    environ: dict[str, str] = {"AWS_REGION": environment.cloud.region}
    if endpoint:
        environ["AWS_ENDPOINT_URL"] = endpoint
    if environment.cloud.endpoint == "local":
        environ.update(EMULATOR_CREDENTIALS)
    return environ


def _boto_session(environment: Environment) -> boto3.Session:
    if environment.cloud.endpoint == "local":
        return boto3.Session(
            aws_access_key_id=EMULATOR_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=EMULATOR_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=environment.cloud.region,
        )
    return boto3.Session(region_name=environment.cloud.region)


def state_client(environment: Environment, endpoint: str | None) -> Any:
    """S3 where the environment's Terraform state (and its saved plans) are kept."""
    region = environment.terraform.backend.region or environment.cloud.region
    return _boto_session(environment).client("s3", endpoint_url=endpoint, region_name=region)


@dataclass(frozen=True)
class StateVersion:
    """One version of an environment's state object: the state bucket's versioning is its backup."""

    version_id: str
    modified: str
    size_bytes: int
    latest: bool


def state_versions(environment: Environment, endpoint: str | None) -> list[StateVersion]:
    """Every kept version of the environment's state, newest first."""
    backend = environment.terraform.backend
    try:
        pages = (
            state_client(environment, endpoint)
            .get_paginator("list_object_versions")
            .paginate(Bucket=backend.bucket, Prefix=backend.key)
        )
        versions = [
            StateVersion(
                version_id=item["VersionId"],
                modified=item["LastModified"].isoformat(),
                size_bytes=int(item["Size"]),
                latest=bool(item["IsLatest"]),
            )
            for page in pages
            for item in page.get("Versions", [])
            if item["Key"] == backend.key
        ]
    except (ClientError, BotoCoreError) as error:
        raise TerraformError(
            f"{environment.name}: cannot list the versions of s3://{backend.bucket}/{backend.key}: "
            f"{error}"
        ) from None
    return sorted(versions, key=lambda version: version.modified, reverse=True)


def restore_state_version(
    environment: Environment, endpoint: str | None, version_id: str, destination: Path
) -> Path:
    """Write one kept version of the state to `destination` (a fresh place: never the bucket's
    current object), 0600, after checking it is a Terraform state."""
    backend = environment.terraform.backend
    try:
        body = (
            state_client(environment, endpoint)
            .get_object(Bucket=backend.bucket, Key=backend.key, VersionId=version_id)["Body"]
            .read()
        )
    except (ClientError, BotoCoreError) as error:
        raise TerraformError(
            f"{environment.name}: state version {version_id} of s3://{backend.bucket}/"
            f"{backend.key} cannot be read: {error}"
        ) from None
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if not isinstance(document, dict) or "terraform_version" not in document:
        raise TerraformError(
            f"{environment.name}: state version {version_id} is not a Terraform state"
        )
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.touch(mode=0o600, exist_ok=False)
    destination.write_bytes(body)
    return destination


def check_credentials(environment: Environment, endpoint: str | None) -> str:
    """Who Terraform will act as; a clear error before anything runs when nobody."""
    session = _boto_session(environment)
    if session.get_credentials() is None:
        raise MissingCredentialsError(
            f"{environment.name}: no AWS credentials found; set AWS_PROFILE (or "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) for the account of "
            f"{environment.name} before provisioning"
        )
    try:
        identity = session.client("sts", endpoint_url=endpoint).get_caller_identity()
    except (ClientError, BotoCoreError) as error:
        raise MissingCredentialsError(
            f"{environment.name}: the AWS credentials were refused ({error}); renew them "
            "(aws sso login, a fresh AWS_SESSION_TOKEN, ...) and run again"
        ) from None
    return str(identity.get("Arn", "unknown"))


def _secrets() -> list[str]:
    return [
        value
        for name in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
        if (value := os.environ.get(name))
    ]


# --- running terraform ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    """One environment's Terraform settings for one use (provision, drift, bootstrap)."""

    environment: Environment
    workspace: Workspace
    endpoint: str | None
    mirror: Path | None

    @classmethod
    def of(cls, env: str, use: str, endpoint: str | None, source: str | None = None) -> Context:
        """`source`: the tree the code comes from (the run's commit); None: the working tree."""
        environment = load_environment(env)
        workspace = Workspace.of(environment, use, Path(source) if source else None)
        return cls(environment, workspace, endpoint, provider_mirror())

    @property
    def environ(self) -> dict[str, str]:
        environ = {
            **terraform_environ(self.workspace, self.endpoint, self.mirror),
            **aws_environ(self.environment, self.endpoint),
        }
        if self.mirror is not None:
            # A plugin cache would shadow the mirror; the mirror is linked, not copied, anyway.
            environ["TF_PLUGIN_CACHE_DIR"] = ""
        return environ


def prepare(context: Context) -> None:
    """Refresh the working copy of the code and write its CLI configuration."""
    sync_code(context.workspace)
    context.workspace.cli_config.write_text(render_cli_config(context.mirror))


def run_terraform(
    context: Context,
    arguments: Sequence[str],
    *,
    log: RunLog,
    cwd: Path | None = None,
    ok_codes: Sequence[int] = (0,),
    translate: Callable[[str], str] | None = None,
) -> int:
    """`terraform -chdir=STACK ARGS`, every line into the run log; Terraform's errors raised whole.

    `translate` turns each output line into the text logged (for `-json` output).
    """
    command = [TERRAFORM, f"-chdir={cwd or context.workspace.stack_dir}", *arguments]
    log.info("$ %s", " ".join(command[1:]))
    texts: list[str] = []

    def on_line(line: str) -> None:
        text = translate(line) if translate else line
        texts.append(text)
        log.info("%s", text)

    try:
        result = stream(
            command,
            on_line,
            env=context.environ,
            secrets=_secrets(),
            ok_codes=ok_codes,
            keep_lines=2000,
        )
    except ToolError as error:
        tail = "\n".join(texts[-2000:]).splitlines() if translate else error.tail
        if is_lock_error(tail):
            raise StateLockedError(
                context.environment.name, parse_lock_holder(tail), lock_wait(arguments)
            ) from None
        raise TerraformError(
            f"{context.environment.name}: terraform {arguments[0]} failed (exit "
            f"{error.returncode}):\n{error_block(tail)}"
        ) from None
    return result.returncode


def capture_json(context: Context, arguments: Sequence[str]) -> Any:
    """A terraform command whose stdout is JSON data (not log material)."""
    completed = subprocess.run(
        [TERRAFORM, f"-chdir={context.workspace.stack_dir}", *arguments],
        env={**os.environ, **context.environ},
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise TerraformError(
            f"{context.environment.name}: terraform {' '.join(arguments)} failed:\n"
            f"{completed.stderr.strip()}"
        )
    return json.loads(completed.stdout)


def state_resources(env: str, endpoint: str | None, state_file: Path) -> set[str]:
    """The resource addresses a state file holds, as Terraform reads it in the environment's
    provision workspace (a restored version is read before anyone puts it back)."""
    document = capture_json(
        Context.of(env, "provision", endpoint), ["show", "-json", str(state_file)]
    )
    modules = [((document.get("values") or {}).get("root_module")) or {}]
    found: set[str] = set()
    while modules:
        module = modules.pop()
        found |= {resource["address"] for resource in module.get("resources", [])}
        modules += module.get("child_modules", [])
    return found


@functools.cache
def terraform_version() -> str:
    completed = subprocess.run(
        [TERRAFORM, "version", "-json"],
        env={**os.environ, "CHECKPOINT_DISABLE": "1"},
        capture_output=True,
        text=True,
        check=False,
    )
    return completed.stdout.strip() or completed.stderr.strip()


@contextlib.contextmanager
def hold_workspace(
    env: str, use: str, holder: str, wait_seconds: float = WORKSPACE_WAIT_SECONDS
) -> Iterator[None]:
    """One run at a time per working directory on this machine (the state lock covers others).

    `holder` (the flow run) is written into the lock file, for whoever waits on it.
    """
    workspace = Workspace.of(load_environment(env), use)
    workspace.root.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_seconds
    with workspace.lock_file.open("a+") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    handle.seek(0)
                    raise TerraformError(
                        f"{env}: another {use} run on this machine keeps {workspace.root} "
                        f"({handle.read().strip() or 'holder unknown'}); waited {wait_seconds:.0f} s"
                    ) from None
                time.sleep(1)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}, {holder}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
