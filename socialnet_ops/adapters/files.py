"""Files written whole or not at all: a reader never sees half a configuration or secret."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: Path, text: str, mode: int = 0o644) -> bool:
    """Write `text` to `path` through a temporary file and a rename; False when unchanged."""
    if path.exists() and path.read_text() == text:
        if (path.stat().st_mode & 0o777) != mode:
            path.chmod(mode)
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return True


def copy_writable(
    source: Path, destination: Path, ignore: Callable[[str, list[str]], set[str]] | None = None
) -> None:
    """Copy a tree with the owner's write permission on everything (a commit's tree is
    read-only; its copies are written to: Terraform's data, a build's bytecode)."""
    shutil.copytree(
        source,
        destination,
        ignore=ignore or shutil.ignore_patterns("__pycache__", "*.pyc", "node_modules"),
        copy_function=shutil.copyfile,
        dirs_exist_ok=True,
    )
    for path in [destination, *destination.rglob("*")]:
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() or os.access(path, os.X_OK) else 0o644)
