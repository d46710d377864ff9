"""How the local platform runs the app: as containers of the build's images, or as processes.

A build that carries images (`Build.images`, pushed by digest to the environment's registry)
runs as podman containers of exactly those images, so the artifact tried here is the one
Kubernetes runs; a build without images (no container engine here, or `platform.runtime:
processes`) runs the build's files with the project's interpreter, as before.

The API container sees only its own secrets: the three files it reads, each mounted read-only
and handed to the image's user (podman's `U` option), never the folder that also holds Vault's
tokens.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

from socialnet_ops.adapters import images
from socialnet_ops.core.environments import LocalPlatform as LocalSettings
from socialnet_ops.platforms.base import Build, PlatformError, require_pushed_images
from socialnet_ops.platforms.local.tools import python_executable, write_atomic

SECRETS_INSIDE = "/run/secrets/socialnet"
# The replica settings that name a secret file, and the file each one names.
SECRET_FILE_SETTINGS = (
    "SOCIALNET_DB_PASSWORD_FILE",
    "SOCIALNET_TOKEN_SECRET_FILE",
    "SOCIALNET_TOKEN_SECRET_PREVIOUS_FILE",
)
FRONT_LISTEN_INSIDE = "/etc/nginx/front-listen.conf"


@dataclass(frozen=True)
class ProgramSpec:
    """What supervisord runs for one program."""

    command: list[str]
    directory: Path
    env: dict[str, str]


def instance_name(environment: str, state_dir: Path) -> str:
    """The environment and its state folder: two checkouts (or test sessions) may each run an
    environment of the same name, and their containers must never replace each other's."""
    return f"{environment}-{hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:6]}"


class AppRuntime:
    """The programs of the app's tiers for one environment, as containers or as processes."""

    def __init__(self, environment: str, state_dir: Path, settings: LocalSettings) -> None:
        self.environment = environment
        self.state_dir = state_dir
        self.settings = settings
        self.engine = images.ContainerEngine()
        self.instance = instance_name(environment, state_dir)
        self.label = {"socialnet.instance": self.instance}

    def container(self, program: str) -> str:
        """The container name of `program`."""
        return f"socialnet-{self.instance}-{program}"

    # --- can containers run here --------------------------------------------------------------

    def problem(self) -> str | None:
        """Why this environment runs processes instead of containers, or None."""
        if self.settings.runtime == "processes":
            return "platform.runtime is processes in the environment"
        if shutil.which(images.REGISTRY_BINARY) is None:
            return f"no registry: {images.REGISTRY_BINARY} missing ({images.INSTALL_HINT})"
        return images.engine_problem()

    def describe(self) -> str:
        problem = self.problem()
        return "containers (podman)" if problem is None else f"processes: {problem}"

    # --- the registry ------------------------------------------------------------------------

    def registry_program(self, port: int) -> ProgramSpec:
        folder = self.state_dir / "registry"
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "config.yml"
        write_atomic(config, images.registry_config(folder / "data", port))
        binary = shutil.which(images.REGISTRY_BINARY) or images.REGISTRY_BINARY
        return ProgramSpec([binary, "serve", str(config)], folder, {})

    def require_images(self, build: Build) -> None:
        """Every image of `build` is in its registry and pulled; a clear error otherwise."""
        require_pushed_images(build)
        for reference in build.images.values():
            try:
                self.engine.pull(reference)
            except images.ImageError as error:
                raise PlatformError(f"build {build.version}: {error}") from None

    # --- the API -----------------------------------------------------------------------------

    def api_program(
        self, build: Build, program: str, port: int, env: dict[str, str], drain_timeout: float
    ) -> ProgramSpec:
        server = [
            "uvicorn", "app.api.main:app", "--host", "127.0.0.1", "--port", str(port),
            "--no-access-log", "--no-server-header",
            # Longer than HAProxy's idle server connections: HAProxy closes them first.
            "--timeout-keep-alive", "75",
            "--timeout-graceful-shutdown", str(int(drain_timeout) + 5),
        ]  # fmt: skip
        reference = build.images.get("api")
        if reference is None:
            assert build.path is not None
            return ProgramSpec(
                [python_executable(), "-m", *server],
                build.path,
                {**env, "PYTHONPATH": str(build.path), "PYTHONUNBUFFERED": "1"},
            )
        # Only its own secret files, each mounted where the settings point inside; never the
        # folder that also holds Vault's tokens.
        secrets = {
            Path(env[key]): f"{SECRETS_INSIDE}/{Path(env[key]).name}"
            for key in SECRET_FILE_SETTINGS
            if Path(env[key]).exists()
        }
        inside = {key: value for key, value in env.items() if key not in SECRET_FILE_SETTINGS}
        inside.update(
            {
                key: secrets[Path(env[key])]
                for key in SECRET_FILE_SETTINGS
                if Path(env[key]) in secrets
            }
        )
        command = images.container_command(
            reference,
            self.container(program),
            server,
            env=inside,
            owned_mounts=secrets,
            labels=self.label,
        )
        return ProgramSpec(command, self.state_dir, self.engine.env)

    # --- the front ---------------------------------------------------------------------------

    def front_image(self, running: str | None, build: Build) -> str | None:
        """The front image for `build`: the running one when it holds the same files (a release
        that changed only the API does not restart the front), else the build's own."""
        wanted = build.images.get("front")
        if running is None or wanted is None or running == wanted:
            return wanted
        with contextlib.suppress(images.ImageError):
            if self.engine.layers(running) == self.engine.layers(self.engine.pull(wanted)):
                return running
        return wanted

    def front_program(
        self, reference: str | None, port: int, root: Path, program: str = "front"
    ) -> ProgramSpec:
        """The front of image `reference`; None: the static server of the files under `root`."""
        if reference is None:
            return ProgramSpec(
                [python_executable(), "-m", "app.front.server", "--host", "127.0.0.1", "--port", str(port)],
                root,
                {"PYTHONPATH": str(root), "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
        listen = self.state_dir / f"{program}-listen.conf"
        write_atomic(listen, f"listen 127.0.0.1:{port};\n")
        command = images.container_command(
            reference,
            self.container(program),
            ["nginx", "-g", "daemon off;"],
            mounts={listen: FRONT_LISTEN_INSIDE},
            labels=self.label,
        )
        return ProgramSpec(command, self.state_dir, self.engine.env)

    # --- clean-up ----------------------------------------------------------------------------

    def remove(self, program: str) -> None:
        """The container of `program`, should its `podman run` have been killed before it."""
        if shutil.which("podman"):
            self.engine.remove_container(self.container(program))

    def remove_all(self) -> None:
        """Every container of this environment (after supervisord stopped their programs)."""
        if shutil.which("podman"):
            with contextlib.suppress(images.ImageError):
                self.engine.remove_labelled(f"socialnet.instance={self.instance}")
