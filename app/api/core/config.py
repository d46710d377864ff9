"""One settings object, read from SOCIALNET_* environment variables (see docs/api-contract.md)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import URL

# Only a `dev` build may run without a configured key; it then signs with this well-known one.
DEV_TOKEN_SECRET = "socialnet-dev-token-secret-not-for-production"  # noqa: S105


class MissingTokenSecretError(RuntimeError):
    """Raised at start-up when a non-dev build has no token signing key."""


def _read_secret_file(path: Path) -> str:
    # Mounted secrets usually end with a newline that is not part of the value.
    return path.read_text(encoding="utf-8").rstrip("\r\n")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SOCIALNET_", extra="ignore")

    db_host: str = "127.0.0.1"
    db_port: int = Field(default=5432, ge=1, le=65535)
    db_name: str = "socialnet"
    db_user: str = "socialnet"
    db_password: SecretStr = SecretStr("")
    db_password_file: Path | None = None
    db_pool_size: int = Field(default=10, ge=1, le=200)
    db_connect_timeout_s: int = Field(default=5, ge=1, le=60)

    token_secret: SecretStr | None = None
    token_secret_file: Path | None = None
    token_secret_previous: SecretStr | None = None
    token_secret_previous_file: Path | None = None
    token_ttl_s: int = Field(default=3600, ge=1)

    # Failed logins tolerated per window before 429 (see app/api/core/login_throttle.py).
    login_failures_per_account: int = Field(default=5, ge=1)
    login_failures_per_address: int = Field(default=20, ge=1)
    login_failure_window_s: int = Field(default=60, ge=1, le=86_400)
    # Peers whose X-Forwarded-For names the client (the edge): comma-separated addresses or
    # networks; empty trusts no one, and the peer itself is the client.
    trusted_proxies: str = "127.0.0.1,::1"

    version: str = "dev"
    git_sha: str = "unknown"
    track: Literal["stable", "canary"] = "stable"

    fault_error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    fault_latency_ms: int = Field(default=0, ge=0, le=60_000)
    # `<table>:<ms>`, e.g. `posts:300`; empty is off (see app/api/core/faults.py).
    fault_slow_query: str = Field(default="", pattern=r"^([A-Za-z_][A-Za-z0-9_]*:[0-9]{1,5})?$")

    front_dir: Path | None = None

    @field_validator("trusted_proxies")
    @classmethod
    def _addresses_or_networks(cls, value: str) -> str:
        for entry in filter(None, (part.strip() for part in value.split(","))):
            try:
                ipaddress.ip_network(entry)
            except ValueError:
                raise ValueError(
                    f"{entry!r} is not an IP address or network (e.g. 10.0.0.0/8)"
                ) from None
        return value

    def database_password(self) -> str:
        if self.db_password_file is not None:
            return _read_secret_file(self.db_password_file)
        return self.db_password.get_secret_value()

    def database_url(self) -> URL:
        return URL.create(
            "postgresql+psycopg",
            username=self.db_user,
            password=self.database_password() or None,
            host=self.db_host,
            port=self.db_port,
            database=self.db_name,
        )

    def token_signing_keys(self) -> list[str]:
        """The current key first, then the previous one still accepted during a rotation."""
        current = self._secret(self.token_secret, self.token_secret_file)
        if current is None:
            if self.version != "dev":
                raise MissingTokenSecretError(
                    f"SOCIALNET_TOKEN_SECRET or SOCIALNET_TOKEN_SECRET_FILE is required for "
                    f"version {self.version!r}; only SOCIALNET_VERSION=dev may run without one"
                )
            current = DEV_TOKEN_SECRET
        previous = self._secret(self.token_secret_previous, self.token_secret_previous_file)
        return [current] if previous is None else [current, previous]

    @staticmethod
    def _secret(value: SecretStr | None, file: Path | None) -> str | None:
        if file is not None:
            return _read_secret_file(file) or None
        if value is not None:
            return value.get_secret_value() or None
        return None
