"""S3 with boto3: streaming multipart uploads, streaming downloads, listings and deletes.

A backup never lands in a temporary file: a producer's bytes are cut into 8 MiB parts, hashed
(SHA-256) as they pass and uploaded a few parts at a time. Any failure aborts the multipart upload,
so no partial object ever appears. When S3 itself is unreachable the abort cannot be sent; the
next run of the same environment sweeps such leftovers (`abort_stale_uploads`), and a bucket
lifecycle rule (AbortIncompleteMultipartUpload) is the last net.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError
from prefect import get_run_logger, task

from socialnet_ops.adapters.s3 import (
    DOWNLOAD_CHUNK,
    PART_SIZE,
    PARTS_IN_FLIGHT,
    StorageError,
    ensure_bucket_exists,
    reason,
    s3_client,
)
from socialnet_ops.core.backups import ObjectStore

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef


@task(name="ensure-backup-bucket", retries=2, retry_delay_seconds=2)
def ensure_bucket(store: ObjectStore) -> None:
    ensure_bucket_exists(store)


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


@task(name="delete-backup-objects", retries=2, retry_delay_seconds=2)
def delete_backup_objects(store: ObjectStore, keys: list[str]) -> int:
    if keys:
        get_run_logger().info("deleting %d objects from s3://%s", len(keys), store.bucket)
        delete_objects(store, keys)
    return len(keys)
