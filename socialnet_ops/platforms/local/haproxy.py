"""HAProxy's runtime API (admin socket) and the weight arithmetic of the canary split."""

from __future__ import annotations

import csv
import io
import socket
from dataclasses import dataclass
from pathlib import Path

from socialnet_ops.platforms.base import PlatformError

BACKEND = "api"
# Backends of one track (header, cookie and sticky routing) holding the same slots as BACKEND.
TRACK_BACKENDS = {"stable": "api_stable", "canary": "api_canary"}
MAX_WEIGHT = 256
# Pre-declared server slots: enough for a full surge of the largest allowed track (2 x replicas).
STABLE_SLOTS = 33
CANARY_SLOTS = 17


def slot_names(track: str) -> list[str]:
    count = STABLE_SLOTS if track == "stable" else CANARY_SLOTS
    return [f"{track}{index}" for index in range(1, count + 1)]


def server_lines(tracks: tuple[str, ...] = ("stable", "canary")) -> str:
    """The `server` lines of a backend: every slot starts disabled (maintenance)."""
    names = [name for track in tracks for name in slot_names(track)]
    # Port 1 is a placeholder: `set server ... addr` points a slot at a replica when it is used.
    return "\n".join(f"    server {name} 127.0.0.1:1" for name in names)


def slot_backends(slot: str) -> tuple[str, ...]:
    """Every backend holding `slot`: the weighted one and its track's own."""
    track = "canary" if slot.startswith("canary") else "stable"
    return BACKEND, TRACK_BACKENDS[track]


@dataclass(frozen=True)
class TrafficRules:
    """What the edge's pattern files hold: empty lists and maps route nothing by request."""

    header_values: tuple[str, ...] = ()
    cookie_always: bool = False
    cookie_never: bool = False
    # The sticky cookie's value per track ({} : sticky off); pins map those values back.
    pins: tuple[tuple[str, str], ...] = ()

    def files(self) -> dict[str, list[str]]:
        """Pattern file name -> its lines (`key value` for maps)."""
        return {
            "canary-header.acl": list(self.header_values),
            "canary-cookie.acl": ["always"] if self.cookie_always else [],
            "canary-never.acl": ["never"] if self.cookie_never else [],
            "tracks.map": [f"{track} {value}" for track, value in self.pins],
            "pins.map": [f"{value} {track}" for track, value in self.pins],
        }


def track_weights(canary_percent: int, stable_servers: int, canary_servers: int) -> tuple[int, int]:
    """Per-server weights that send `canary_percent` % of requests to the canary group.

    HAProxy's roundrobin shares requests in proportion to server weights (0..256), so each group
    gets its share split evenly among its servers.
    """
    if not 0 <= canary_percent <= 100:
        raise ValueError(f"canary weight {canary_percent} is not a percentage (0..100)")
    if canary_servers == 0:
        return MAX_WEIGHT // 2, 0
    if stable_servers == 0:
        return 0, MAX_WEIGHT // 2

    if canary_percent in {0, 100}:
        return (0, MAX_WEIGHT // 2) if canary_percent == 100 else (MAX_WEIGHT // 2, 0)
    # Integer weights: try every stable weight and keep the split closest to the target.
    target = canary_percent / 100
    best = (2.0, 0, 0)
    for stable_weight in range(1, MAX_WEIGHT + 1):
        ideal = target * stable_servers * stable_weight / ((1 - target) * canary_servers)
        canary_weight = min(MAX_WEIGHT, max(1, round(ideal)))
        canary_total = canary_servers * canary_weight
        error = abs(canary_total / (stable_servers * stable_weight + canary_total) - target)
        if error < best[0] - 1e-12:
            best = (error, stable_weight, canary_weight)
    return best[1], best[2]


@dataclass(frozen=True)
class ServerStat:
    name: str
    status: str  # UP, DOWN, MAINT, DRAIN, no check ...
    weight: int
    current_sessions: int
    address: str


class HAProxyRuntime:
    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path

    def command(self, line: str) -> str:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(5)
                sock.connect(str(self.socket_path))
                sock.sendall(line.encode() + b"\n")
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
        except OSError as error:
            raise PlatformError(f"HAProxy runtime API {self.socket_path}: {error}") from None
        answer = b"".join(chunks).decode()
        lowered = answer.lower()
        if any(word in lowered for word in ("unknown command", "no such", "require", "invalid")):
            raise PlatformError(f"HAProxy runtime API refused {line!r}: {answer.strip()}")
        return answer

    def answers(self) -> bool:
        try:
            self.command("show info")
        except PlatformError:
            return False
        return True

    def point(self, slot: str, port: int) -> None:
        for backend in slot_backends(slot):
            self.command(f"set server {backend}/{slot} addr 127.0.0.1 port {port}")

    def point_front(self, port: int) -> None:
        """Send the front's traffic (new connections) to `port`."""
        self.command(f"set server front/front addr 127.0.0.1 port {port}")

    def set_state(self, slot: str, state: str) -> None:
        for backend in slot_backends(slot):
            self.command(f"set server {backend}/{slot} state {state}")

    def replace_patterns(self, path: Path, lines: list[str]) -> None:
        """Make the ACL or map file `path` hold `lines`, on disk (for a restart) and live.

        The live patterns always equal the file's (every change goes through here, and a start
        loads the file), so an unchanged file needs no runtime command.
        """
        kind = "map" if path.suffix == ".map" else "acl"
        text = "".join(f"{line}\n" for line in lines)
        if path.exists() and path.read_text() == text:
            return
        # clear then add: a request in between sees no rule, i.e. the weighted split.
        self.command(f"clear {kind} {path}")
        for line in lines:
            self.command(f"add {kind} {path} {line}")
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)

    def set_weight(self, slot: str, weight: int) -> None:
        self.command(f"set weight {BACKEND}/{slot} {weight}")

    def stats(self, backend: str = BACKEND) -> dict[str, ServerStat]:
        """The servers of `backend` (api: the weighted one), from `show stat` (CSV)."""
        text = self.command("show stat").lstrip("# ")
        servers: dict[str, ServerStat] = {}
        for row in csv.DictReader(io.StringIO(text)):
            if row.get("pxname") != backend or row.get("svname") in {"FRONTEND", "BACKEND"}:
                continue
            servers[row["svname"]] = ServerStat(
                name=row["svname"],
                status=row.get("status", ""),
                weight=int(row.get("weight") or 0),
                current_sessions=int(row.get("scur") or 0),
                address=row.get("addr", ""),
            )
        return servers

    def sessions(self, slot: str) -> int:
        """Requests `slot` serves now, through every backend that holds it."""
        total = 0
        for backend in slot_backends(slot):
            stat = self.stats(backend).get(slot)
            total += stat.current_sessions if stat else 0
        return total

    def save_server_state(self, path: Path) -> None:
        """Dump the runtime server state so a restarted HAProxy resumes where it was."""
        text = self.command("show servers state")
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)
