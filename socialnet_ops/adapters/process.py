"""Run a tool and hand every output line to a callback as it is printed (for the run log)."""

from __future__ import annotations

import contextvars
import os
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


class ToolError(Exception):
    """A tool exited non-zero; the message names the command and ends with its last lines."""

    def __init__(self, command: str, returncode: int, tail: list[str]) -> None:
        self.command = command
        self.returncode = returncode
        self.tail = tail
        last = "\n".join(tail[-20:])
        super().__init__(f"{command} exited with {returncode}:\n{last}")


@dataclass(frozen=True)
class ToolResult:
    returncode: int
    lines: list[str]


def redactor(secrets: Sequence[str]) -> Callable[[str], str]:
    """Replace every secret value by '***' (longest first, so overlapping values stay hidden)."""
    values = sorted((value for value in secrets if value), key=len, reverse=True)

    def redact(line: str) -> str:
        for value in values:
            line = line.replace(value, "***")
        return line

    return redact


def start_in_this_context(
    target: Callable[..., object], *args: object, name: str
) -> threading.Thread:
    """A started daemon thread running `target(*args)` with the calling thread's context variables.

    A new thread starts with an empty context, where Prefect finds neither the run nor the
    settings: a run started by the CLI reports to the control plane through the caller's settings
    context (the process-wide settings point elsewhere), so a run logger used from a bare thread
    prints to the terminal and its records never reach the run's logs.
    """
    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(target, *args), name=name, daemon=True)
    thread.start()
    return thread


def stream(
    command: Sequence[str],
    on_line: Callable[[str], None],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    secrets: Sequence[str] = (),
    ok_codes: Sequence[int] = (0,),
    keep_lines: int = 500,
) -> ToolResult:
    """Run `command`, streaming merged stdout/stderr line by line; raise ToolError on a bad exit.

    `on_line` is called in the calling thread (a Prefect run logger works there).
    """
    redact = redactor(secrets)
    full_env = {**os.environ, **(env or {})}
    kept: deque[str] = deque(maxlen=keep_lines)
    try:
        process = subprocess.Popen(
            list(command),
            cwd=cwd,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
    except FileNotFoundError:
        raise ToolError(command[0], 127, [f"{command[0]}: command not found"]) from None
    assert process.stdout is not None
    for raw in process.stdout:
        line = redact(raw.rstrip("\n"))
        kept.append(line)
        on_line(line)
    returncode = process.wait()
    lines = list(kept)
    if returncode not in ok_codes:
        raise ToolError(redact(" ".join(command[:3])), returncode, lines)
    return ToolResult(returncode, lines)


def pid_alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie awaiting its parent does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return not Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return False
