"""S3 tasks: the bucket checked (or created) before a backup, objects deleted. The tool work
(streaming uploads and downloads, listings, deletes) is in socialnet_ops.adapters.s3."""

from __future__ import annotations

from prefect import get_run_logger, task

from socialnet_ops.adapters.s3 import delete_objects, ensure_bucket_exists
from socialnet_ops.core.backups import ObjectStore


@task(name="ensure-backup-bucket", retries=2, retry_delay_seconds=2)
def ensure_bucket(store: ObjectStore) -> None:
    ensure_bucket_exists(store)


@task(name="delete-backup-objects", retries=2, retry_delay_seconds=2)
def delete_backup_objects(store: ObjectStore, keys: list[str]) -> int:
    if keys:
        get_run_logger().info("deleting %d objects from s3://%s", len(keys), store.bucket)
        delete_objects(store, keys)
    return len(keys)
