"""S3 access shared by the platform and the storage tasks: clients and bucket checks (no Prefect)."""

from __future__ import annotations

import ipaddress
import os
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from socialnet_ops.core.backups import BackupError, ObjectStore

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

PART_SIZE = 8 * 1024 * 1024
PARTS_IN_FLIGHT = 3
DOWNLOAD_CHUNK = 1024 * 1024
_EMULATOR_KEY = "testing"


class StorageError(BackupError):
    """S3 refused or could not be reached; the message names the bucket, key and reason."""


def _is_loopback(url: str | None) -> bool:
    host = urlsplit(url or "").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def s3_client(store: ObjectStore) -> S3Client:
    """A client for the store; the AWS emulator on loopback gets its dummy key if none is set."""
    key_id = secret = None
    if _is_loopback(store.endpoint_url) and not os.environ.get("AWS_ACCESS_KEY_ID"):
        key_id = secret = _EMULATOR_KEY
    s3_settings: dict[str, Any] = {"addressing_style": "path"}
    if _is_loopback(store.endpoint_url):
        # botocore SHA-256-signs every request body sent over plain HTTP (over HTTPS it relies on
        # TLS and the CRC32 checksum instead). On loopback no network can alter a body, the CRC32
        # is still sent and checked, and the backup's own SHA-256 is verified on restore: the
        # second SHA-256 pass over every part is only CPU taken from pg_dump.
        s3_settings["payload_signing_enabled"] = False
    config = Config(
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=5,
        read_timeout=120,
        max_pool_connections=PARTS_IN_FLIGHT + 4,
        s3=s3_settings,  # type: ignore[arg-type]
    )
    return boto3.client(
        "s3",
        endpoint_url=store.endpoint_url,
        region_name=store.region,
        config=config,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
    )


def reason(error: BaseException) -> str:
    """A short, secret-free reason from a boto error."""
    if isinstance(error, ClientError):
        details = error.response.get("Error", {})
        return f"{details.get('Code', '?')}: {details.get('Message', '')}".strip()
    return str(error)


def ensure_bucket_exists(store: ObjectStore) -> None:
    client = s3_client(store)
    try:
        client.head_bucket(Bucket=store.bucket)
        return
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code")
        if code not in ("404", "NoSuchBucket") or not store.create_bucket:
            raise StorageError(
                f"bucket s3://{store.bucket} is not usable ({reason(error)}); it is created by "
                "the provision flow (Terraform)"
            ) from None
    except BotoCoreError as error:
        raise StorageError(f"s3://{store.bucket}: {reason(error)}") from None
    arguments: dict[str, Any] = {"Bucket": store.bucket}
    if store.region != "us-east-1":
        arguments["CreateBucketConfiguration"] = {"LocationConstraint": store.region}
    client.create_bucket(**arguments)
