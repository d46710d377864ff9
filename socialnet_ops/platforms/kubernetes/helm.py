"""The helm CLI, run with its output streamed line by line (socialnet_ops.adapters.process.stream)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from socialnet_ops.adapters.process import ToolError, stream
from socialnet_ops.core.paths import repo_root
from socialnet_ops.platforms.base import PlatformError

INSTALL_HINT = (
    "run infrastructure/bootstrap/install-helm.sh (or set SOCIALNET_HELM to a helm binary)"
)


def helm_binary() -> str:
    """SOCIALNET_HELM, else the project's venv, else .local/bin, else PATH."""
    override = os.environ.get("SOCIALNET_HELM")
    candidates = [
        Path(override) if override else None,
        Path(sys.prefix) / "bin" / "helm",
        repo_root() / ".venv" / "bin" / "helm",
        repo_root() / ".local" / "bin" / "helm",
    ]
    for candidate in candidates:
        if candidate is not None and candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("helm")
    if found:
        return found
    raise PlatformError(f"helm not found: {INSTALL_HINT}")


def _quiet(_line: str) -> None:
    pass


@dataclass(frozen=True)
class Revision:
    revision: int
    status: str
    description: str
    app_version: str


class Helm:
    """One release in one namespace of one kube context."""

    def __init__(self, context: str, namespace: str, release: str, binary: str | None = None):
        self.context = context
        self.namespace = namespace
        self.release = release
        self._binary = binary

    @property
    def binary(self) -> str:
        if self._binary is None:
            self._binary = helm_binary()
        return self._binary

    def _command(self, *arguments: str) -> list[str]:
        return [
            self.binary,
            *arguments,
            "--kube-context",
            self.context,
            "--namespace",
            self.namespace,
        ]

    def run(
        self,
        *arguments: str,
        on_line: Callable[[str], None] = _quiet,
        ok_codes: Sequence[int] = (0,),
    ) -> list[str]:
        return stream(self._command(*arguments), on_line, ok_codes=ok_codes).lines

    def upgrade(
        self,
        chart: Path,
        values_files: Sequence[Path],
        timeout_seconds: float,
        description: str,
        on_line: Callable[[str], None] = _quiet,
        wait: bool = True,
    ) -> None:
        """`upgrade --install --wait --atomic`: a release that does not become ready is rolled
        back by helm itself before this raises."""
        arguments = [
            "upgrade",
            "--install",
            self.release,
            str(chart),
            "--create-namespace",
            "--history-max",
            "30",
            "--description",
            description,
            "--timeout",
            f"{max(1, round(timeout_seconds))}s",
        ]
        if wait:
            arguments += ["--wait", "--atomic"]
        for values in values_files:
            arguments += ["--values", str(values)]
        self.run(*arguments, on_line=on_line)

    def rollback(
        self, revision: int, timeout_seconds: float, on_line: Callable[[str], None] = _quiet
    ) -> None:
        self.run(
            "rollback",
            self.release,
            str(revision),
            "--wait",
            "--timeout",
            f"{max(1, round(timeout_seconds))}s",
            on_line=on_line,
        )

    def history(self) -> list[Revision]:
        """Oldest first; [] when the release was never installed."""
        try:
            lines = self.run("history", self.release, "--output", "json", "--max", "100")
        except ToolError as error:
            if any("release: not found" in line for line in error.tail):
                return []
            raise
        entries: list[dict[str, Any]] = json.loads("\n".join(lines) or "[]")
        return [
            Revision(
                revision=int(entry["revision"]),
                status=str(entry.get("status", "")),
                description=str(entry.get("description", "")),
                app_version=str(entry.get("app_version", "")),
            )
            for entry in entries
        ]

    def manifest_digest(self) -> str | None:
        """sha256 prefix of the manifests the deployed revision rendered; None when none."""
        try:
            lines = self.run("get", "manifest", self.release)
        except ToolError as error:
            if any("not found" in line for line in error.tail):
                return None
            raise
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]

    def values(self, revision: int | None = None) -> dict[str, Any]:
        """The values given to a revision (the latest by default); {} when none."""
        arguments = ["get", "values", self.release, "--output", "json"]
        if revision is not None:
            arguments += ["--revision", str(revision)]
        try:
            lines = self.run(*arguments)
        except ToolError as error:
            if any("not found" in line for line in error.tail):
                return {}
            raise
        loaded = json.loads("\n".join(lines) or "null")
        return loaded if isinstance(loaded, dict) else {}
