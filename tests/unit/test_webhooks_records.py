"""What the receiver keeps for `socialnet-ops status`, its one-line logs and its HTTP protocol."""

from __future__ import annotations

from pathlib import Path

import pytest
from uvicorn.importer import import_from_string
from uvicorn.protocols.http.h11_impl import H11Protocol

from socialnet_ops.control import control_plane
from socialnet_ops.control.status import webhook_notices
from webhooks.alerts import one_line
from webhooks.records import KEEP_NOTICES, append_bounded, read_newest, record_notice
from webhooks.server import ReceiverProtocol, header_timeout

pytestmark = pytest.mark.unit


def test_a_bounded_file_keeps_only_the_newest_lines(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "records.jsonl"
    for index in range(12):
        append_bounded(path, {"n": index}, keep=5)
    assert [record["n"] for record in read_newest(path, 100)] == [7, 8, 9, 10, 11]
    assert [record["n"] for record in read_newest(path, 2)] == [10, 11]
    assert read_newest(tmp_path / "absent.jsonl", 5) == []


def test_status_shows_the_receiver_s_notices_one_line_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "notices.jsonl"
    monkeypatch.setenv("SOCIALNET_WEBHOOK_NOTICES_FILE", str(path))
    assert webhook_notices() == []
    for index in range(KEEP_NOTICES + 5):
        record_notice("Push Hook", f"d{index}", 400, {"error": f"invalid payload {index}"})
    record_notice(
        "Tag Push Hook", "d-tag", 200, {"status": "refused", "reason": "never served staging"}
    )
    lines = webhook_notices(2)
    assert lines[0].endswith(f"Push Hook invalid (400): invalid payload {KEEP_NOTICES + 4}")
    assert lines[1].endswith("Tag Push Hook refused (200): never served staging")
    assert len(path.read_text().splitlines()) == KEEP_NOTICES


def test_a_notice_that_cannot_be_written_does_not_fail_the_reply(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("SOCIALNET_WEBHOOK_NOTICES_FILE", str(blocker / "notices.jsonl"))
    record_notice("Push Hook", "d", 400, {"error": "x"})  # no exception


def test_the_notices_default_to_the_control_plane_s_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SOCIALNET_WEBHOOK_NOTICES_FILE", raising=False)
    monkeypatch.setenv("SOCIALNET_STATE_DIR", str(tmp_path))
    record_notice("Push Hook", "d", 400, {"error": "x"})
    assert (control_plane.control_plane_dir() / "webhook-notices.jsonl").exists()


@pytest.mark.parametrize(
    ("text", "logged"),
    [
        ("disk full", "disk full"),
        ("a\nb\r\nc", "a\\nb\\r\\nc"),
        ("tab\there\x1b[31m", "tab\\there\\x1b[31m"),
        ("line\u2028separator", "line\\u2028separator"),
        ("café ✓", "café ✓"),
    ],
)
def test_one_line_escapes_line_breaks_and_control_characters(text: str, logged: str) -> None:
    assert one_line(text) == logged


def test_the_receiver_runs_with_header_and_keep_alive_timeouts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    command = control_plane.receiver_command(18088)

    def option(name: str) -> str:
        return command[command.index(name) + 1]

    assert import_from_string(option("--http")) is ReceiverProtocol
    assert issubclass(ReceiverProtocol, H11Protocol)
    assert option("--timeout-keep-alive") == "5"
    assert option("--h11-max-incomplete-event-size") == "16384"
    monkeypatch.delenv("SOCIALNET_WEBHOOK_HEADER_TIMEOUT", raising=False)
    assert header_timeout() == 10.0
