"""Pure parts of the local platform: weights, names, binaries, the state file and its lock."""

from __future__ import annotations

import fcntl
import subprocess
import sys
from pathlib import Path

import pytest

from socialnet_ops.platforms.base import Build, PlatformError
from socialnet_ops.platforms.local import program_name
from socialnet_ops.platforms.local.haproxy import (
    CANARY_SLOTS,
    MAX_WEIGHT,
    STABLE_SLOTS,
    server_lines,
    track_weights,
)
from socialnet_ops.platforms.local.state import BuildRecord, Replica, StateStore
from socialnet_ops.platforms.local.supervisor import unexpected_exits
from socialnet_ops.platforms.local.tools import find_binary, supervisor_quote

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("percent", [0, 1, 5, 20, 25, 50, 75, 99, 100])
@pytest.mark.parametrize(("stable", "canary"), [(1, 1), (2, 1), (3, 2), (16, 8), (33, 17)])
def test_weights_send_the_canary_its_share(percent: int, stable: int, canary: int) -> None:
    stable_weight, canary_weight = track_weights(percent, stable, canary)

    assert 0 <= stable_weight <= MAX_WEIGHT and 0 <= canary_weight <= MAX_WEIGHT
    share = canary * canary_weight / (stable * stable_weight + canary * canary_weight)
    assert abs(share - percent / 100) <= 0.005
    assert (canary_weight == 0) == (percent == 0)
    assert (stable_weight == 0) == (percent == 100)


def test_weights_without_a_canary_or_a_stable_group() -> None:
    assert track_weights(30, 2, 0) == (MAX_WEIGHT // 2, 0)
    assert track_weights(30, 0, 1) == (0, MAX_WEIGHT // 2)
    with pytest.raises(ValueError, match="120"):
        track_weights(120, 1, 1)


def test_every_slot_is_declared_once() -> None:
    lines = server_lines().splitlines()
    names = [line.split()[1] for line in lines]
    assert len(names) == len(set(names)) == STABLE_SLOTS + CANARY_SLOTS
    assert names[0] == "stable1" and names[-1] == f"canary{CANARY_SLOTS}"


def test_program_names_are_plain() -> None:
    assert program_name("stable", "1.2.3", 1) == "api-stable-1_2_3-1"
    assert program_name("canary", "feature/x:y", 2) == "api-canary-feature_x_y-2"


def test_a_missing_binary_names_it_and_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(PlatformError, match=r"'haproxy' not found.*apt-get install haproxy"):
        find_binary("haproxy")
    with pytest.raises(PlatformError, match="'no-such-tool' not found"):
        find_binary("no-such-tool")


def test_supervisor_values_are_quoted_and_percent_escaped() -> None:
    assert supervisor_quote('a"b%c\\d') == '"a\\"b%%c\\\\d"'


def test_state_round_trips_and_keeps_builds(tmp_path: Path) -> None:
    store = StateStore(tmp_path, "demo")
    state = store.load()
    assert state.environment == "demo" and state.ports == {}
    build = Build(
        version="1.0.0", git_sha="abc", ref="v1.0.0", path=tmp_path, runtime_env={"A": "1"}
    )
    state.stable.build = BuildRecord.of(build)
    state.stable.replicas.append(
        Replica(
            program="api-stable-1_0_0-1", port=1234, slot="stable1", track="stable", version="1.0.0"
        )
    )
    state.ports["edge"] = 4321
    store.save(state)

    again = store.load()
    assert again.stable.build is not None and again.stable.build.to_build() == build
    assert again.taken_ports() == {1234, 4321}
    assert oct(store.path.stat().st_mode & 0o777) == "0o644"


def test_a_corrupt_state_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(PlatformError, match=r"state\.json: unreadable"):
        StateStore(tmp_path, "demo").load()


def test_the_lock_excludes_other_processes_and_is_reentrant(tmp_path: Path) -> None:
    store = StateStore(tmp_path, "demo")
    probe = (
        "import fcntl, sys\n"
        f"handle = open({str(store.lock_path)!r}, 'a')\n"
        "try:\n    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
        "except BlockingIOError:\n    sys.exit(3)\n"
    )
    with store.locked(), store.locked():
        assert subprocess.run([sys.executable, "-c", probe], check=False).returncode == 3
    assert subprocess.run([sys.executable, "-c", probe], check=False).returncode == 0
    assert fcntl  # the module under test relies on flock


def test_unexpected_exits_are_counted_after_the_program_was_added(tmp_path: Path) -> None:
    log = tmp_path / "supervisord.log"
    old = "2026-01-01 00:00:00,000 INFO exited: api-stable-1-1 (terminated by SIGKILL; not expected)\n"
    log.write_text(old)
    offset = log.stat().st_size
    with log.open("a") as handle:
        handle.write(
            "2026-01-01 00:00:01,000 INFO exited: api-stable-1-1 (terminated by SIGKILL; not expected)\n"
            "2026-01-01 00:00:02,000 INFO stopped: api-stable-1-1 (terminated by SIGTERM)\n"
            "2026-01-01 00:00:03,000 INFO exited: front (exit status 1; not expected)\n"
            "2026-01-01 00:00:04,000 INFO exited: api-stable-1-1 (exit status 0; expected)\n"
        )

    counts = unexpected_exits(log, {"api-stable-1-1": offset, "front": 0})

    assert counts == {"api-stable-1-1": 1, "front": 1}
