"""Container images: base images made here, builds with buildah, a registry, podman to run them.

Drives the `podman`, `buildah` and `mmdebstrap` command lines and a registry's HTTP API
(distribution v2). Written by hand because no maintained Python library drives buildah, and
podman's (`podman-py`) needs a long-running `podman system service`; the command lines are the
tools' stable interface.

- The engine runs with the project's `containers.conf` (runc, lowered ulimits): on these kernels
  crun's defaults are refused (see TOOLCHAIN.md, "Containers").
- No public registry is reachable, so the bases the Dockerfiles build `FROM` are made from Debian
  packages with mmdebstrap and imported, once per recipe. The Dockerfiles take them as build
  arguments and build from `python:3.11-slim` anywhere else.
- The API's Python dependencies come from a wheelhouse made once per `requirements.txt`
  (`pip download`), mounted into the build: builds send no traffic anywhere.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import httpx

from socialnet_ops.adapters.nodes import debian_mirrors
from socialnet_ops.adapters.process import ToolError, stream
from socialnet_ops.core.network import is_loopback
from socialnet_ops.core.paths import repo_root

CACHE_SETTING = "SOCIALNET_IMAGE_CACHE"
DEFAULT_CACHE = Path("/var/cache/socialnet-images")
SUITE = "bookworm"
# Bump when the way a base is made changes, so cached bases are remade.
BASE_RECIPE = 1
TOOLS = ("podman", "buildah", "runc")
INSTALL_HINT = "apt-get install podman buildah runc docker-registry"
MANIFEST_TYPES = ", ".join(
    (
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    )
)
Say = Callable[[str], None]


class ImageError(Exception):
    """An image that cannot be made, pushed or found; the message names it."""


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_SETTING) or DEFAULT_CACHE)


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class BaseImage:
    """A base image made from Debian packages: what `python:3.11-slim` or nginx is elsewhere."""

    name: str
    packages: tuple[str, ...]
    hooks: tuple[str, ...] = ()

    @property
    def reference(self) -> str:
        mirror, security = debian_mirrors()
        document = json.dumps([BASE_RECIPE, SUITE, mirror, security, self.__dict__], sort_keys=True)
        return f"localhost/socialnet-base/{self.name}:{hashlib.sha256(document.encode()).hexdigest()[:12]}"

    def mmdebstrap_command(self) -> list[str]:
        mirror, security = debian_mirrors()
        return [
            "mmdebstrap",
            "--mode=root",
            "--variant=minbase",
            f"--include={','.join(self.packages)}",
            '--aptopt=Acquire::Check-Valid-Until "false"',
            '--aptopt=Acquire::Check-Date "false"',
            '--aptopt=APT::Install-Recommends "false"',
            '--aptopt=Acquire::Languages "none"',
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            "--dpkgopt=path-exclude=/usr/share/info/*",
            *(f"--customize-hook={hook}" for hook in self.hooks),
            SUITE,
            "-",  # a tarball on stdout, for `podman import`
            f"deb {mirror} {SUITE} main",
            f"deb {security} {SUITE}-security main",
        ]


NGINX_CONF = repo_root() / "infrastructure" / "images" / "nginx-unprivileged.conf"
PYTHON_BASE = BaseImage(
    "python", ("python3", "python3-venv", "python-is-python3", "ca-certificates")
)
NGINX_BASE = BaseImage(
    "nginx",
    ("nginx-light", "wget"),
    (
        f'cp {NGINX_CONF} "$1/etc/nginx/nginx.conf"',
        'rm -f "$1"/etc/nginx/sites-enabled/*',
        # uid 101 as in nginxinc/nginx-unprivileged, which the front's Dockerfile runs as.
        'chroot "$1" groupadd --system --gid 101 nginx',
        'chroot "$1" useradd --system --uid 101 --gid 101 --no-create-home '
        "--home-dir /nonexistent --shell /usr/sbin/nologin nginx",
    ),
)


@dataclass(frozen=True)
class Component:
    """One image of the app: its Dockerfile and the base images its build arguments name."""

    name: str
    dockerfile: str
    bases: tuple[tuple[str, BaseImage], ...]
    inputs: tuple[str, ...]  # the files and folders its Dockerfile copies
    requirements: str | None = None  # mounted as a wheelhouse when set

    @property
    def repository(self) -> str:
        return f"socialnet-{self.name}"


COMPONENTS = (
    Component(
        "api",
        "app/api/Dockerfile",
        (("PYTHON_IMAGE", PYTHON_BASE),),
        ("app/__init__.py", "app/api"),
        "app/api/requirements.txt",
    ),
    Component(
        "front",
        "app/front/Dockerfile",
        (("ALPINE_IMAGE", NGINX_BASE), ("NGINX_IMAGE", NGINX_BASE)),
        ("app/front",),
    ),
)


@dataclass(frozen=True)
class BuiltImage:
    component: str
    reference: str  # registry/repository@sha256:...
    size_mb: float


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    cache_root().mkdir(parents=True, exist_ok=True)
    with open(cache_root() / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # other runs and test workers share the cache
        yield


@cache
def _containers_conf(home: Path) -> Path:
    """The engine's settings, written once per process (every podman and buildah call reads them)."""
    conf = home / "containers.conf"
    text = (
        "# Written by socialnet-ops: the kernel here refuses crun and unlowered ulimits.\n"
        "[containers]\n"
        'default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]\n'
        "[engine]\n"
        'runtime = "runc"\n'
    )
    if not conf.exists() or conf.read_text() != text:
        home.mkdir(parents=True, exist_ok=True)
        conf.write_text(text)
    return conf


class ContainerEngine:
    """podman and buildah with the project's settings; storage is the machine's."""

    def __init__(self) -> None:
        self.home = cache_root()
        self.env = {"CONTAINERS_CONF": str(_containers_conf(self.home))}

    def run(self, command: list[str], say: Say = _quiet, *, cwd: Path | None = None) -> list[str]:
        try:
            return stream(command, say, cwd=cwd, env=self.env).lines
        except ToolError as error:
            last = error.tail[-1] if error.tail else ""
            raise ImageError(f"{' '.join(command[:2])} failed: {last}") from error

    def _call(self, *command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(command),
            capture_output=True,
            text=True,
            env={**os.environ, **self.env},
            check=False,
        )

    def output(self, *command: str) -> str:
        result = self._call(*command)
        if result.returncode != 0:
            raise ImageError(f"{' '.join(command[:3])} failed: {result.stderr.strip()[-300:]}")
        return result.stdout.strip()

    def has_image(self, reference: str) -> bool:
        return self._call("podman", "image", "exists", reference).returncode == 0

    # --- bases -------------------------------------------------------------------------------

    def ensure_base(self, base: BaseImage, say: Say = _quiet) -> str:
        """The base image of `base`'s current recipe, made once per machine (~30 s)."""
        reference = base.reference
        if self.has_image(reference):
            return reference
        with _locked(f"base-{base.name}"):
            if self.has_image(reference):
                return reference
            say(f"making the {base.name} base image {reference} from Debian packages")
            make = subprocess.Popen(
                base.mmdebstrap_command(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            imported = subprocess.run(
                ["podman", "import", "-q", "-", reference],
                stdin=make.stdout,
                capture_output=True,
                text=True,
                env={**os.environ, **self.env},
                check=False,
            )
            assert make.stdout is not None and make.stderr is not None
            make.stdout.close()
            made_log = make.stderr.read().decode(errors="replace").splitlines()
            if make.wait() != 0 or imported.returncode != 0:
                last = (made_log[-1:] or [imported.stderr.strip()])[0]
                raise ImageError(f"cannot make base image {reference}: {last}")
        return reference

    # --- the engine's health -----------------------------------------------------------------

    def problem(self) -> str | None:
        """Why containers cannot run here (a missing tool, or the kernel refusing), or None."""
        return engine_problem()

    # --- builds ------------------------------------------------------------------------------

    def wheelhouse(self, requirements: Path, say: Say = _quiet) -> Path:
        """The wheels of `requirements` for CPython 3.11 on x86_64 Linux, downloaded once."""
        digest = hashlib.sha256(requirements.read_bytes()).hexdigest()[:16]
        folder = self.home / "wheels" / digest
        if (folder / ".complete").exists():
            return folder
        with _locked("wheels"):
            if (folder / ".complete").exists():
                return folder
            say(f"downloading the wheels of {requirements.name} into {folder}")
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            platforms = ("manylinux_2_17_x86_64", "manylinux_2_28_x86_64", "manylinux2014_x86_64")
            try:
                stream(
                    [
                        "python3", "-m", "pip", "download", "--quiet", "--only-binary=:all:",
                        "--python-version", "3.11", "--implementation", "cp",
                        *(option for platform in platforms for option in ("--platform", platform)),
                        "-r", str(requirements), "-d", str(folder),
                    ],
                    say,
                )  # fmt: skip
            except ToolError as error:
                shutil.rmtree(folder, ignore_errors=True)
                raise ImageError(
                    f"cannot download the wheels of {requirements}: {error.tail[-1:]}"
                ) from error
            (folder / ".complete").touch()
        return folder

    def build(
        self,
        context: Path,
        component: Component,
        tag: str,
        labels: dict[str, str],
        say: Say = _quiet,
        *,
        no_cache: bool = False,
    ) -> str:
        """Build `component` from the files of `context` with buildah; returns the local tag.

        Layers are cached (`--layers`): an app-only change reuses the base and dependency layers.
        """
        dockerfile = context / component.dockerfile
        if not dockerfile.is_file():
            raise ImageError(f"{component.dockerfile} is missing from the release's files")
        arguments = [f"{name}={self.ensure_base(base, say)}" for name, base in component.bases]
        volumes: list[str] = []
        if component.requirements:
            wheels = self.wheelhouse(context / component.requirements, say)
            arguments.append("WHEELS=/wheels")
            volumes = ["--volume", f"{wheels}:/wheels:ro"]
        # An image of the same files and bases is never built twice: a release that changed only
        # the API reuses the front image as it is (same digest, so the front is not restarted).
        local = f"localhost/{component.repository}:inputs-{_inputs_digest(context, component, arguments)}"
        if not no_cache and self.has_image(local):
            say(f"{component.repository}: its files are unchanged, reusing {local}")
            return local
        self.run(
            [
                "buildah", "bud", "--isolation", "chroot", "--format", "docker",
                "--no-cache" if no_cache else "--layers",
                "--quiet", "--file", str(dockerfile), "--tag", local,
                "--tag", f"localhost/{component.repository}:{tag}", *volumes,
                *(option for argument in arguments for option in ("--build-arg", argument)),
                *(option for key, value in sorted(labels.items()) for option in ("--label", f"{key}={value}")),
                str(context),
            ],
            say,
        )  # fmt: skip
        return local

    def size_mb(self, reference: str) -> float:
        return round(
            int(self.output("podman", "image", "inspect", "--format", "{{.Size}}", reference))
            / 1e6,
            1,
        )

    def push(self, local: str, registry: str, repository: str, tag: str, say: Say = _quiet) -> str:
        """Push `local` as `registry/repository:tag`; returns `registry/repository@sha256:...`."""
        with tempfile.TemporaryDirectory(prefix="socialnet-push-") as folder:
            digest_file = Path(folder) / "digest"
            self.run(
                [
                    "podman", "push", "--quiet", f"--tls-verify={not is_loopback(registry)}".lower(),
                    "--digestfile", str(digest_file), local, f"{registry}/{repository}:{tag}",
                ],
                say,
            )  # fmt: skip
            return f"{registry}/{repository}@{digest_file.read_text().strip()}"

    def pull(self, reference: str, say: Say = _quiet) -> str:
        registry = reference.split("/", 1)[0]
        if not self.has_image(reference):
            self.run(
                [
                    "podman",
                    "pull",
                    "--quiet",
                    f"--tls-verify={not is_loopback(registry)}".lower(),
                    reference,
                ],
                say,
            )
        return reference

    def remove_container(self, name: str) -> None:
        self._call("podman", "rm", "--force", "--ignore", "--time", "5", name)

    def remove_labelled(self, label: str) -> None:
        """Every container labelled `label` (key=value), e.g. left by a killed `podman run`."""
        found = self.output("podman", "ps", "--all", "--quiet", "--filter", f"label={label}")
        for container in found.split():
            self.remove_container(container)

    def layers(self, reference: str) -> list[str]:
        """The digests of the image's file system layers: equal for images of equal files."""
        return list(
            json.loads(
                self.output(
                    "podman", "image", "inspect", "--format", "{{json .RootFS.Layers}}", reference
                )
            )
        )

    def user(self, reference: str) -> tuple[int, int]:
        """The numeric uid and gid the image runs as (its `USER uid:gid`)."""
        user = self.output("podman", "image", "inspect", "--format", "{{.Config.User}}", reference)
        uid, _, gid = user.partition(":")
        if not uid.isdigit() or not (gid or uid).isdigit():
            raise ImageError(f"image {reference} runs as {user or 'root'}: expected USER uid:gid")
        return int(uid), int(gid or uid)

    def labels(self, reference: str) -> dict[str, str]:
        return dict(
            json.loads(
                self.output("podman", "image", "inspect", "--format", "{{json .Labels}}", reference)
            )
            or {}
        )


def _inputs_digest(context: Path, component: Component, arguments: list[str]) -> str:
    """sha256 of what an image is made of: its Dockerfile, the files it copies, its bases."""
    digest = hashlib.sha256("\n".join(arguments).encode())
    for name in (component.dockerfile, *component.inputs):
        root = context / name
        for path in sorted([root] if root.is_file() else root.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(context)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


@cache
def engine_problem() -> str | None:
    """Why containers cannot run here (a missing tool, or the kernel refusing), or None; once."""
    engine = ContainerEngine()
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"no container engine: {', '.join(missing)} missing ({INSTALL_HINT})"
    try:
        base = engine.ensure_base(PYTHON_BASE)
        engine.output("podman", "run", "--rm", "--network=host", base, "true")
    except ImageError as error:
        return f"the container engine cannot run containers here: {error}"
    return None


def oci_labels(version: str, commit: str | None, source: str) -> dict[str, str]:
    """The OCI annotations an image carries, as labels (what `podman inspect` shows)."""
    labels = {
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.created": datetime.now(UTC).isoformat(timespec="seconds"),
        "org.opencontainers.image.source": source,
    }
    if commit:
        labels["org.opencontainers.image.revision"] = commit
    return labels


def split_digest_reference(reference: str) -> tuple[str, str, str]:
    """`registry/repository@sha256:...` -> (registry, repository, digest)."""
    name, _, digest = reference.partition("@")
    registry, _, repository = name.partition("/")
    if not digest.startswith("sha256:") or not repository:
        raise ImageError(f"image {reference!r} is not pinned by digest (registry/name@sha256:...)")
    return registry, repository, digest


def in_registry(reference: str, timeout: float = 5.0) -> bool:
    """Whether the registry holds the manifest of `reference` (registry/name@sha256:...)."""
    registry, repository, digest = split_digest_reference(reference)
    scheme = "http" if is_loopback(registry) else "https"
    try:
        answer = httpx.head(
            f"{scheme}://{registry}/v2/{repository}/manifests/{digest}",
            headers={"Accept": MANIFEST_TYPES},
            timeout=timeout,
        )
    except httpx.HTTPError as error:
        raise ImageError(f"registry {registry} does not answer: {error}") from error
    return answer.status_code == 200


def build_and_push(
    context: Path,
    registry: str,
    tag: str,
    labels: dict[str, str],
    say: Say = _quiet,
) -> list[BuiltImage]:
    """Build every component of the app from `context` and push it to `registry`."""
    engine = ContainerEngine()
    built = []
    for component in COMPONENTS:
        local = engine.build(context, component, tag, labels, say)
        reference = engine.push(local, registry, component.repository, tag, say)
        built.append(BuiltImage(component.name, reference, engine.size_mb(local)))
    return built


REGISTRY_BINARY = "docker-registry"


def registry_config(storage: Path, port: int) -> str:
    """The configuration of a distribution (v2) registry on 127.0.0.1:`port` storing in `storage`."""
    return (
        "version: 0.1\n"
        "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
        "health:\n  storagedriver:\n    enabled: false\n"
    )


def container_command(
    reference: str,
    name: str,
    command: list[str],
    *,
    env: dict[str, str] | None = None,
    mounts: dict[Path, str] | None = None,
    labels: dict[str, str] | None = None,
    owned_mounts: dict[Path, str] | None = None,
) -> list[str]:
    """`podman run` of `reference` in the foreground, as a supervised program runs it.

    Host networking (the command binds 127.0.0.1 ports, behind HAProxy as processes do), a
    read-only root with a private /tmp, the image's own user, no healthcheck timer (there is no
    systemd to run it: the platform checks readiness itself), and `--replace` so that a rerun
    takes over the name of a container left by a crash.
    """
    options = [
        "podman", "run", "--rm", "--replace", "--name", name, "--network=host", "--read-only",
        "--no-healthcheck", "--pull=never", "--log-driver=none", "--stop-timeout=15",
    ]  # fmt: skip
    for host, inside in sorted((mounts or {}).items()):
        options += ["--volume", f"{host}:{inside}:ro"]
    # Files only the container's user may read (0600): handed to that user as they are mounted.
    for host, inside in sorted((owned_mounts or {}).items()):
        options += ["--volume", f"{host}:{inside}:ro,U"]
    for key, value in sorted((env or {}).items()):
        options += ["--env", f"{key}={value}"]
    for key, value in sorted((labels or {}).items()):
        options += ["--label", f"{key}={value}"]
    return [*options, reference, *command]


def prepare(say: Say = print) -> None:
    """Make the base images and the API's wheelhouse now (`make install`), not during a build."""
    engine = ContainerEngine()
    for base in (PYTHON_BASE, NGINX_BASE):
        say(f"base image {engine.ensure_base(base, say)}")
    for component in COMPONENTS:
        if component.requirements:
            say(
                f"wheels of {component.name}: {engine.wheelhouse(repo_root() / component.requirements, say)}"
            )


if __name__ == "__main__":
    prepare(lambda line: print(f"images: {line}"))
