"""The Terraform tasks' own logic: where AWS is, and what of Terraform's output an error keeps."""

from __future__ import annotations

import pytest

from socialnet_ops.adapters.terraform import EMULATOR_CREDENTIALS, aws_environ, endpoint_for
from socialnet_ops.core.environments import load_environment
from socialnet_ops.core.terraform import TerraformConfigError
from socialnet_ops.core.terraform import error_block as _error_block

pytestmark = pytest.mark.unit


def test_the_endpoint_override_wins_then_the_environment_then_the_catalog(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    staging = load_environment("staging")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    assert endpoint_for(staging) is None  # AWS itself
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:5000")
    assert endpoint_for(staging) == "http://127.0.0.1:5000"
    assert endpoint_for(staging, "http://127.0.0.1:6000") == "http://127.0.0.1:6000"


def test_signed_requests_go_only_to_the_catalogs_endpoint_or_an_emulator_here(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    staging = load_environment("staging")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with pytest.raises(TerraformConfigError, match=r"staging: endpoint 'https://collect\.example'"):
        endpoint_for(staging, "https://collect.example")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://10.0.0.9:4566")
    with pytest.raises(TerraformConfigError, match=r"AWS_ENDPOINT_URL 'http://10\.0\.0\.9:4566'"):
        endpoint_for(staging)
    assert endpoint_for(staging, "http://localhost:4566") == "http://localhost:4566"


def test_only_the_local_emulator_gets_its_throwaway_keys() -> None:
    local = aws_environ(load_environment("local"), "http://127.0.0.1:5000")
    assert local["AWS_ENDPOINT_URL"] == "http://127.0.0.1:5000"
    assert local["AWS_ACCESS_KEY_ID"] == EMULATOR_CREDENTIALS["AWS_ACCESS_KEY_ID"]
    production = aws_environ(load_environment("production"), None)
    assert production == {"AWS_REGION": "eu-west-3"}


def test_an_error_keeps_each_of_terraforms_reports_once_and_whole() -> None:
    lines = [
        "module.network.aws_vpc.this: Creating...",
        "Error: execution halted",
        "",
        "Error: execution halted",
        "",
        "Error: creating EC2 VPC: context canceled",
        "",
        "  with module.network.aws_vpc.this,",
        '  on ../../modules/network/main.tf line 9, in resource "aws_vpc" "this":',
    ]
    assert _error_block(lines) == "\n\n".join(
        [
            "Error: execution halted",
            "Error: creating EC2 VPC: context canceled\n\n  with module.network.aws_vpc.this,\n"
            '  on ../../modules/network/main.tf line 9, in resource "aws_vpc" "this":',
        ]
    )
    assert _error_block(["just", "lines"]) == "just\nlines"
