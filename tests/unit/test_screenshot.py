from __future__ import annotations

import json
import stat
from pathlib import Path

import httpx
import pytest

from socialnet_ops.control import screenshot
from socialnet_ops.control.screenshot import (
    PrefectUrls,
    ScreenshotError,
    chromium_executable,
    control_plane_urls,
    fetch_runs,
    newest_started_run,
    urls_from_api,
)

pytestmark = pytest.mark.unit

API = "http://127.0.0.1:4200/api"
SETTINGS = {"PREFECT_API_URL": API, "PREFECT_UI_URL": "http://127.0.0.1:4200"}


def run(run_id: str, start_time: str | None) -> dict[str, str | None]:
    return {"id": run_id, "name": f"release-{run_id}", "start_time": start_time}


def test_the_run_page_is_under_the_ui_beside_the_api() -> None:
    urls = urls_from_api("http://127.0.0.1:4311/api/")
    assert urls == PrefectUrls(api="http://127.0.0.1:4311/api", ui="http://127.0.0.1:4311")
    assert urls.flow_run_page("abc") == "http://127.0.0.1:4311/runs/flow-run/abc"


@pytest.mark.parametrize("wrong", ["http://127.0.0.1:4200", "127.0.0.1:4200/api", "api"])
def test_an_api_url_that_is_not_one_says_what_is_expected(wrong: str) -> None:
    with pytest.raises(ScreenshotError, match="expected the Prefect API URL"):
        urls_from_api(wrong)


def test_a_running_or_degraded_control_plane_gives_its_urls() -> None:
    for state in ("running", "degraded"):
        urls = control_plane_urls({"state": state}, SETTINGS)
        assert urls.flow_run_page("r1") == "http://127.0.0.1:4200/runs/flow-run/r1"


@pytest.mark.parametrize("state", ["not started", "stopped", "unreachable: socket refused"])
def test_a_control_plane_that_is_not_running_is_an_error_naming_the_fix(state: str) -> None:
    with pytest.raises(ScreenshotError, match=r"not running .*`make up`") as caught:
        control_plane_urls({"state": state}, SETTINGS)
    assert state in str(caught.value)


def test_the_newest_started_run_wins_whatever_the_order_and_time_zone() -> None:
    runs = [
        run("older", "2026-01-02T10:00:00Z"),
        run("newest", "2026-01-02T10:30:00+02:00"),  # 08:30 UTC: older than "later"
        run("later", "2026-01-02T10:15:00+00:00"),
        run("scheduled", None),
    ]
    assert newest_started_run(runs, "release", API)["id"] == "later"


def test_no_started_run_is_an_error_naming_the_flow_and_the_server() -> None:
    with pytest.raises(ScreenshotError, match=r"no run of the flow 'release' has started on http"):
        newest_started_run([run("scheduled", None)], "release", API)
    with pytest.raises(ScreenshotError, match="'backup'"):
        newest_started_run([], "backup", API)


def test_the_api_is_asked_for_started_runs_of_the_flow_newest_first() -> None:
    asked: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(request)
        return httpx.Response(200, json=[run("r1", "2026-01-02T10:00:00Z")])

    with httpx.Client(transport=httpx.MockTransport(answer)) as client:
        runs = fetch_runs(urls_from_api(API), "release", client)
    assert [item["id"] for item in runs] == ["r1"]
    assert str(asked[0].url) == f"{API}/flow_runs/filter"
    body = json.loads(asked[0].content)
    assert body["flows"] == {"name": {"any_": ["release"]}}
    assert body["flow_runs"] == {"start_time": {"is_null_": False}}
    assert body["sort"] == "START_TIME_DESC"


def test_an_api_that_refuses_or_does_not_answer_is_a_clear_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(422, text="bad filter")

    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with (
        httpx.Client(transport=httpx.MockTransport(refuse)) as client,
        pytest.raises(ScreenshotError, match="refused the run query: 422 bad filter"),
    ):
        fetch_runs(urls_from_api(API), "release", client)
    with (
        httpx.Client(transport=httpx.MockTransport(unreachable)) as client,
        pytest.raises(ScreenshotError, match=r"no Prefect API answers at .*`make up`"),
    ):
        fetch_runs(urls_from_api(API), "release", client)


def executable(path: Path) -> str:
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_chromium_comes_from_the_setting_then_the_debian_path_then_path(tmp_path: Path) -> None:
    configured = executable(tmp_path / "configured")
    debian = executable(tmp_path / "debian")
    on_path = executable(tmp_path / "on-path")
    missing = str(tmp_path / "missing")

    def which(_name: str) -> str:
        return on_path

    assert chromium_executable({"SOCIALNET_CHROMIUM": configured}, debian, which) == configured
    assert chromium_executable({"SOCIALNET_CHROMIUM": missing}, debian, which) == debian
    assert chromium_executable({}, missing, which) == on_path


def test_missing_chromium_says_how_to_install_it(tmp_path: Path) -> None:
    not_executable = tmp_path / "chromium"
    not_executable.write_text("")
    with pytest.raises(ScreenshotError, match=r"Chromium not found .*apt-get install chromium"):
        chromium_executable({}, str(not_executable), lambda _name: None)


def test_main_prints_the_error_and_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Nothing listens on port 9 of the loopback: the API is unreachable, said before any browser.
    arguments = ["--api-url", "http://127.0.0.1:9/api", "--out", str(tmp_path / "shot.png")]
    assert screenshot.main(arguments) == 2
    assert "error: no Prefect API answers at http://127.0.0.1:9/api" in capsys.readouterr().err
    assert not (tmp_path / "shot.png").exists()
