"""The playbooks parse, and ansible-lint passes where it is installed (CI: the dev group)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from socialnet_ops.adapters.ansible import ANSIBLE_DIR, ansible_environ, playbook_environment
from tests.support.requirements import unavailable

pytestmark = pytest.mark.integration

PLAYBOOKS = sorted((ANSIBLE_DIR / "playbooks").glob("*.yml"))


@pytest.mark.parametrize("playbook", PLAYBOOKS, ids=lambda path: path.name)
def test_playbook_syntax(playbook: Path) -> None:
    result = subprocess.run(
        [
            "ansible-playbook",
            "--syntax-check",
            "-i",
            str(ANSIBLE_DIR / "inventories" / "example.yml"),
            str(playbook),
        ],
        env=playbook_environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_ansible_lint_is_clean() -> None:
    lint = shutil.which("ansible-lint")
    if lint is None:
        unavailable("ansible-lint is not installed (it is in the dev dependency group: uv sync)")
    result = subprocess.run(
        [lint, "--offline", "playbooks/", "roles/"],
        cwd=ANSIBLE_DIR,
        env={**playbook_environment(), **ansible_environ()},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
