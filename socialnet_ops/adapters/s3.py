"""S3 with boto3 (no Prefect): clients, bucket checks, streaming multipart uploads, streaming
downloads, listings and deletes.

A backup never lands in a temporary file: a producer's bytes are cut into 8 MiB parts, hashed
(SHA-256) as they pass and uploaded a few parts at a time. Any failure aborts the multipart upload,
so no partial object ever appears. When S3 itself is unreachable the abort cannot be sent; the
next run of the same environment sweeps such leftovers (`abort_stale_uploads`), and a bucket
lifecycle rule (AbortIncompleteMultipartUpload) is the last net.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from socialnet_ops.core.backups import BackupError, ObjectStore
from socialnet_ops.core.network import is_loopback

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

PART_SIZE = 8 * 1024 * 1024
PARTS_IN_FLIGHT = 3
DOWNLOAD_CHUNK = 1024 * 1024
_EMULATOR_KEY = "testing"


class StorageError(BackupError):
    """S3 refused or could not be reached; the message names the bucket, key and reason."""


def s3_client(store: ObjectStore) -> S3Client:
    """A client for the store; the AWS emulator on loopback gets its dummy key if none is set."""
    key_id = secret = None
    if is_loopback(store.endpoint_url) and not os.environ.get("AWS_ACCESS_KEY_ID"):
        key_id = secret = _EMULATOR_KEY
    s3_settings: dict[str, Any] = {"addressing_style": "path"}
    if is_loopback(store.endpoint_url):
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


# --- streaming upload ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Uploaded:
    key: str
    size_bytes: int
    sha256: str
    parts: int


def _read_part(source: IO[bytes], size: int) -> bytes:
    """Up to `size` bytes (short reads of a pipe are joined); b"" at the end."""
    chunks = []
    remaining = size
    while remaining > 0:
        chunk = source.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def upload_stream(
    store: ObjectStore,
    key: str,
    source: IO[bytes],
    metadata: dict[str, str],
    on_progress: Callable[[int], None] | None = None,
    part_size: int = PART_SIZE,
) -> Uploaded:
    """Read `source` to its end into one S3 object; abort the multipart upload on any failure."""
    client = s3_client(store)
    try:
        upload_id = client.create_multipart_upload(
            Bucket=store.bucket,
            Key=key,
            ServerSideEncryption="AES256",
            ContentType="application/octet-stream",
            Metadata=metadata,
        )["UploadId"]
    except (BotoCoreError, ClientError) as error:
        raise StorageError(
            f"cannot start the upload of s3://{store.bucket}/{key}: {reason(error)}"
        ) from None
    digest = hashlib.sha256()
    size = 0
    slots = threading.BoundedSemaphore(PARTS_IN_FLIGHT)
    futures: list[Future[CompletedPartTypeDef]] = []

    def send(number: int, body: bytes) -> CompletedPartTypeDef:
        try:
            answer = client.upload_part(
                Bucket=store.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
            )
            return {"PartNumber": number, "ETag": answer["ETag"]}
        finally:
            slots.release()

    try:
        with ThreadPoolExecutor(max_workers=PARTS_IN_FLIGHT, thread_name_prefix="s3-part") as pool:
            number = 0
            while True:
                body = _read_part(source, part_size)
                if not body and number > 0:
                    break
                number += 1
                digest.update(body)
                size += len(body)
                slots.acquire()
                # Fail fast: a part that failed stops the producer instead of reading on.
                for done in futures:
                    if done.done() and done.exception() is not None:
                        done.result()
                futures.append(pool.submit(send, number, body))
                if on_progress:
                    on_progress(size)
                if not body:
                    break
            parts = [future.result() for future in futures]
        client.complete_multipart_upload(
            Bucket=store.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
    except BaseException as error:
        aborted = abort_upload(client, store.bucket, key, upload_id)
        why = reason(error) if isinstance(error, BotoCoreError | ClientError) else str(error)
        tail = "aborted" if aborted else "could not be aborted now; the next run removes it"
        if isinstance(error, BotoCoreError | ClientError):
            raise StorageError(
                f"upload of s3://{store.bucket}/{key} failed after {size} bytes ({why}); the "
                f"multipart upload {tail}"
            ) from None
        raise
    return Uploaded(key=key, size_bytes=size, sha256=digest.hexdigest(), parts=len(parts))


def abort_upload(client: S3Client, bucket: str, key: str, upload_id: str) -> bool:
    try:
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        return True
    except (BotoCoreError, ClientError):
        return False


def incomplete_uploads(store: ObjectStore, prefix: str) -> list[dict[str, Any]]:
    client = s3_client(store)
    uploads: list[dict[str, Any]] = []
    paginator = client.get_paginator("list_multipart_uploads")
    for page in paginator.paginate(Bucket=store.bucket, Prefix=prefix):
        uploads += [dict(upload) for upload in page.get("Uploads", [])]
    return uploads


def abort_stale_uploads(store: ObjectStore, prefix: str) -> list[str]:
    """Abort every unfinished upload under `prefix`; call it only while holding the backup lock."""
    client = s3_client(store)
    aborted = []
    for upload in incomplete_uploads(store, prefix):
        if abort_upload(client, store.bucket, upload["Key"], upload["UploadId"]):
            aborted.append(upload["Key"])
    return aborted


# --- objects --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredObject:
    key: str
    size_bytes: int
    last_modified: datetime


def list_objects(store: ObjectStore, prefix: str) -> list[StoredObject]:
    client = s3_client(store)
    found = []
    try:
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=store.bucket, Prefix=prefix
        ):
            found += [
                StoredObject(item["Key"], item["Size"], item["LastModified"])
                for item in page.get("Contents", [])
            ]
    except (BotoCoreError, ClientError) as error:
        raise StorageError(f"cannot list s3://{store.bucket}/{prefix}: {reason(error)}") from None
    return found


def put_json(store: ObjectStore, key: str, document: Any) -> None:
    body = json.dumps(document, indent=2, sort_keys=True, default=str).encode()
    try:
        s3_client(store).put_object(
            Bucket=store.bucket,
            Key=key,
            Body=body,
            ContentType="application/json",
            ServerSideEncryption="AES256",
        )
    except (BotoCoreError, ClientError) as error:
        raise StorageError(f"cannot write s3://{store.bucket}/{key}: {reason(error)}") from None


def get_json(store: ObjectStore, key: str) -> Any:
    try:
        body = s3_client(store).get_object(Bucket=store.bucket, Key=key)["Body"].read()
    except (BotoCoreError, ClientError) as error:
        raise StorageError(f"cannot read s3://{store.bucket}/{key}: {reason(error)}") from None
    try:
        return json.loads(body)
    except ValueError:
        raise StorageError(f"s3://{store.bucket}/{key} is not valid JSON") from None


def read_chunks(store: ObjectStore, key: str, chunk_size: int = DOWNLOAD_CHUNK) -> Iterator[bytes]:
    """The object's bytes as they arrive; errors name the object."""
    try:
        body = s3_client(store).get_object(Bucket=store.bucket, Key=key)["Body"]
        yield from body.iter_chunks(chunk_size)
    except (BotoCoreError, ClientError) as error:
        raise StorageError(f"cannot read s3://{store.bucket}/{key}: {reason(error)}") from None


def delete_objects(store: ObjectStore, keys: list[str]) -> None:
    client = s3_client(store)
    for start in range(0, len(keys), 1000):
        batch = keys[start : start + 1000]
        try:
            answer = client.delete_objects(
                Bucket=store.bucket,
                Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
            )
        except (BotoCoreError, ClientError) as error:
            raise StorageError(f"deleting in s3://{store.bucket} failed: {reason(error)}") from None
        if answer.get("Errors"):
            first = answer["Errors"][0]
            raise StorageError(
                f"cannot delete s3://{store.bucket}/{first.get('Key')}: {first.get('Message')}"
            )
