"""How often runs beat, which sets when the zombie automation crashes a silent run."""

from __future__ import annotations

import pytest

from socialnet_ops.control.control_plane import ControlPlaneError, heartbeat_seconds

pytestmark = pytest.mark.unit


def test_runs_beat_every_30_s_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOCIALNET_HEARTBEAT_SECONDS", raising=False)
    assert heartbeat_seconds() == 30
    monkeypatch.setenv("SOCIALNET_HEARTBEAT_SECONDS", "60")
    assert heartbeat_seconds() == 60


@pytest.mark.parametrize("value", ["0", "10", "29", "601", "ten", "-5", "1.5"])
def test_a_bad_heartbeat_is_one_line_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("SOCIALNET_HEARTBEAT_SECONDS", value)
    with pytest.raises(
        ControlPlaneError,
        match=r"^SOCIALNET_HEARTBEAT_SECONDS=.*from 30 \(Prefect's minimum\) to 600$",
    ):
        heartbeat_seconds()
