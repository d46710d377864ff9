"""The Terraform code itself: formatted, and every stack valid with its modules."""

from __future__ import annotations

import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from socialnet_ops.adapters.terraform import provider_mirror, render_cli_config
from socialnet_ops.core.paths import repo_root
from tests.integration.terraform.conftest import require_terraform

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TREE = repo_root() / "infrastructure" / "terraform"
STACKS = sorted(path.name for path in (TREE / "stacks").iterdir() if path.is_dir())


def terraform(arguments: list[str], environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["terraform", *arguments],
        env={**os.environ, **environ, "CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1"},
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def test_the_code_is_formatted() -> None:
    require_terraform()
    result = terraform(["fmt", "-check", "-recursive", "-diff", str(TREE)], {})
    assert result.returncode == 0, f"run `terraform fmt -recursive {TREE}`:\n{result.stdout}"


def test_every_stack_validates(tmp_path: Path) -> None:
    require_terraform()
    assert STACKS == ["bootstrap", "local", "production", "staging", "technical"]
    # A copy, so nothing is written into the repository (lock files, .terraform/).
    shutil.copytree(TREE, tmp_path / "terraform", ignore=shutil.ignore_patterns(".terraform*"))
    config = tmp_path / "terraform.tfrc"
    config.write_text(render_cli_config(provider_mirror()))

    def validate(stack: str) -> tuple[str, str]:
        environ = {
            "TF_CLI_CONFIG_FILE": str(config),
            "TF_DATA_DIR": str(tmp_path / f"data-{stack}"),
        }
        chdir = f"-chdir={tmp_path / 'terraform' / 'stacks' / stack}"
        init = terraform([chdir, "init", "-backend=false", "-input=false", "-no-color"], environ)
        if init.returncode != 0:
            return stack, init.stdout + init.stderr
        result = terraform([chdir, "validate", "-no-color"], environ)
        return stack, "" if result.returncode == 0 else result.stdout + result.stderr

    with ThreadPoolExecutor(max_workers=2) as pool:
        failures = {stack: why for stack, why in pool.map(validate, STACKS) if why}
    assert failures == {}
