from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.api.core.config import DEV_TOKEN_SECRET, MissingTokenSecretError, Settings

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("SOCIALNET_"):
            monkeypatch.delenv(name)


def test_defaults_match_the_contract() -> None:
    settings = Settings()
    assert (settings.db_host, settings.db_port, settings.db_name, settings.db_user) == (
        "127.0.0.1",
        5432,
        "socialnet",
        "socialnet",
    )
    assert (settings.db_pool_size, settings.token_ttl_s) == (10, 3600)
    assert (settings.version, settings.git_sha, settings.track) == ("dev", "unknown", "stable")
    assert (settings.fault_error_rate, settings.fault_latency_ms, settings.front_dir) == (
        0,
        0,
        None,
    )


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOCIALNET_DB_HOST", "db.internal")
    monkeypatch.setenv("SOCIALNET_DB_PORT", "6543")
    monkeypatch.setenv("SOCIALNET_TRACK", "canary")
    monkeypatch.setenv("SOCIALNET_FAULT_ERROR_RATE", "0.25")
    settings = Settings()
    assert settings.database_url().host == "db.internal"
    assert settings.database_url().port == 6543
    assert (settings.track, settings.fault_error_rate) == ("canary", 0.25)


def test_password_file_wins_over_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret_file = tmp_path / "db-password"
    secret_file.write_text("from-file\n")
    monkeypatch.setenv("SOCIALNET_DB_PASSWORD", "from-variable")
    monkeypatch.setenv("SOCIALNET_DB_PASSWORD_FILE", str(secret_file))
    assert Settings().database_url().password == "from-file"


def test_password_never_shows_in_the_settings_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOCIALNET_DB_PASSWORD", "hunter2-hunter2")
    monkeypatch.setenv("SOCIALNET_TOKEN_SECRET", "token-secret-value")
    settings = Settings()
    assert "hunter2" not in repr(settings) and "token-secret-value" not in repr(settings)
    assert "hunter2" not in str(settings.database_url())


def test_token_keys_current_then_previous(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    previous_file = tmp_path / "previous"
    previous_file.write_text("old-key")
    monkeypatch.setenv("SOCIALNET_TOKEN_SECRET", "new-key")
    monkeypatch.setenv("SOCIALNET_TOKEN_SECRET_PREVIOUS_FILE", str(previous_file))
    assert Settings().token_signing_keys() == ["new-key", "old-key"]


def test_only_dev_builds_may_run_without_a_token_key(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().token_signing_keys() == [DEV_TOKEN_SECRET]
    monkeypatch.setenv("SOCIALNET_VERSION", "1.4.0")
    with pytest.raises(MissingTokenSecretError, match="SOCIALNET_TOKEN_SECRET"):
        Settings().token_signing_keys()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SOCIALNET_FAULT_ERROR_RATE", "1.5"),
        ("SOCIALNET_FAULT_LATENCY_MS", "-1"),
        ("SOCIALNET_TRACK", "blue"),
        ("SOCIALNET_DB_PORT", "70000"),
    ],
)
def test_invalid_values_are_rejected_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=variable.removeprefix("SOCIALNET_").lower()):
        Settings()


def test_login_limits_default_to_a_minute_of_failures_and_the_loopback_edge() -> None:
    settings = Settings()
    assert (
        settings.login_failures_per_account,
        settings.login_failures_per_address,
        settings.login_failure_window_s,
    ) == (5, 20, 60)
    assert settings.trusted_proxies == "127.0.0.1,::1"


def test_trusted_proxies_are_addresses_or_networks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOCIALNET_TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.1")
    assert Settings().trusted_proxies == "10.0.0.0/8, 192.0.2.1"
    monkeypatch.setenv("SOCIALNET_TRUSTED_PROXIES", "")
    assert Settings().trusted_proxies == ""
    monkeypatch.setenv("SOCIALNET_TRUSTED_PROXIES", "10.0.0.0/8,*")
    with pytest.raises(ValidationError, match="'\\*' is not an IP address or network"):
        Settings()
