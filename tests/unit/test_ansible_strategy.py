"""Which play strategy the configure flow and a plain ansible-playbook run use."""

from __future__ import annotations

from pathlib import Path

import pytest

from socialnet_ops.adapters.ansible import STRATEGY_SETTING, ansible_environ, playbook_environment

pytestmark = pytest.mark.unit


def test_mitogen_is_the_default_and_ansible_finds_its_plugin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(STRATEGY_SETTING, raising=False)
    environ = ansible_environ()
    assert environ["ANSIBLE_STRATEGY"] == "mitogen_linear"
    assert (Path(environ["ANSIBLE_STRATEGY_PLUGINS"]) / "mitogen_linear.py").is_file()
    # A person's own ansible-playbook run gets the same settings as the flow's.
    assert playbook_environment()["ANSIBLE_STRATEGY"] == "mitogen_linear"


def test_ansibles_own_strategy_can_be_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(STRATEGY_SETTING, "free")
    environ = ansible_environ()
    assert environ["ANSIBLE_STRATEGY"] == "free"
    assert "ANSIBLE_STRATEGY_PLUGINS" not in environ


def test_every_run_checks_host_keys() -> None:
    # ansible-runner sets ANSIBLE_HOST_KEY_CHECKING=False when the run's environment lacks it.
    assert ansible_environ()["ANSIBLE_HOST_KEY_CHECKING"] == "True"
