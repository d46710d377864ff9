"""A client of the environment's supervisord over XML-RPC on its unix socket."""

from __future__ import annotations

import contextlib
import http.client
import re
import xmlrpc.client
from pathlib import Path
from typing import Any, cast

from supervisor.xmlrpc import SupervisorTransport

from socialnet_ops.platforms.base import PlatformError


class Supervisor:
    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path

    def _proxy(self) -> Any:
        transport = SupervisorTransport(None, None, f"unix://{self.socket_path}")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor

    def is_running(self) -> bool:
        if not self.socket_path.exists():
            return False
        try:
            return bool(self._proxy().getState()["statename"] == "RUNNING")
        except (OSError, xmlrpc.client.Error, http.client.HTTPException):
            return False

    def call(self, method: str, *args: Any) -> Any:
        try:
            return getattr(self._proxy(), method)(*args)
        except xmlrpc.client.Fault as fault:
            raise PlatformError(f"supervisord {method}{args}: {fault.faultString}") from None
        except (OSError, http.client.HTTPException) as error:
            raise PlatformError(
                f"supervisord at {self.socket_path} does not answer: {error}"
            ) from None

    def processes(self) -> dict[str, dict[str, Any]]:
        infos = cast(list[dict[str, Any]], self.call("getAllProcessInfo"))
        return {info["name"]: info for info in infos}

    def process(self, name: str) -> dict[str, Any] | None:
        return self.processes().get(name)

    def update(self) -> None:
        """Apply the program files of `programs/` like `supervisorctl update`."""
        added, changed, removed = self.call("reloadConfig")[0]
        for name in removed:
            self.remove(name)
        for name in changed:
            self.remove(name)
            self.call("addProcessGroup", name)
        for name in added:
            self.call("addProcessGroup", name)

    def remove(self, name: str) -> None:
        with contextlib.suppress(PlatformError):
            self.call("stopProcessGroup", name, True)
        with contextlib.suppress(PlatformError):
            self.call("removeProcessGroup", name)

    def restart(self, name: str) -> None:
        with contextlib.suppress(PlatformError):
            self.call("stopProcess", name, True)
        self.call("startProcess", name, True)

    def shutdown(self, first: tuple[str, ...] = ()) -> None:
        """Stop `first` (in order, each to its end), then every other program, then supervisord.
        stopAllProcesses stops everything at once, whatever the priorities say."""
        for name in first:
            with contextlib.suppress(PlatformError):
                if (self.process(name) or {}).get("statename") == "RUNNING":
                    self.call("stopProcess", name, True)
        with contextlib.suppress(PlatformError):
            self.call("stopAllProcesses", True)
        with contextlib.suppress(PlatformError):
            self.call("shutdown")


_EXIT_LINE = re.compile(r" (?:exited: (\S+) \(.*not expected\)|gave up: (\S+) entered FATAL)")


def unexpected_exits(log: Path, offsets: dict[str, int]) -> dict[str, int]:
    """Count, per program, the crashes supervisord logged after the program was added."""
    counts: dict[str, int] = {}
    if not log.exists() or not offsets:
        return counts
    start = min(offsets.values())
    with log.open("rb") as handle:
        handle.seek(start)
        position = start
        for raw in handle:
            line = raw.decode("utf-8", "replace")
            match = _EXIT_LINE.search(line)
            if match:
                name = match.group(1) or match.group(2)
                if name in offsets and position >= offsets[name] and match.group(1):
                    counts[name] = counts.get(name, 0) + 1
            position += len(raw)
    return counts
