"""Test support: processes started for a test, the processes below one, what each one runs."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, deepest last."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def command_line(pid: int) -> list[str]:
    """The arguments `pid` was started with; empty once it has exited."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode() for part in raw.split(b"\0") if part]


def is_running(pid: int) -> bool:
    """Alive and not a zombie awaiting its parent."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def not_running(pid: int) -> bool:
    return not is_running(pid)


@contextmanager
def running_process(
    command: list[str],
    env: dict[str, str] | None,
    log: Path,
    cwd: Path | None = None,
    stop_timeout_s: float = 20,
) -> Iterator[subprocess.Popen[bytes]]:
    """`command` started with its output in `log`; stopped (TERM, then KILL) when the block ends."""
    with log.open("wb") as out:
        child = subprocess.Popen(command, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield child
    finally:
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=stop_timeout_s)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
