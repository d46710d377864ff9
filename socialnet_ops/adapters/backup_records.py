"""What recovery relies on beyond pgBackRest's own repository, kept next to it in the
environment's bucket: recovery markers (`markers/<env>/`), drill outcomes (`drills/<env>/`) and
the restore points the flows created (`restore-points/<env>/`: recovery to a name starts from
the newest backup before it); and the drill's numbers pushed to the Prometheus Pushgateway
(prometheus-client's push_to_gateway)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

from socialnet_ops.adapters.postgres import RunLog
from socialnet_ops.adapters.s3 import StorageError, get_json, list_objects, put_json
from socialnet_ops.core.backups import ObjectStore
from socialnet_ops.core.physical_backups import DrillRecord, RecoveryMarker, RestorePoint


def store_marker(store: ObjectStore, marker: RecoveryMarker) -> str:
    key = marker.key()
    put_json(store, key, marker.model_dump(mode="json"))
    return key


def _documents(store: ObjectStore, prefix: str, log: RunLog) -> list[dict[str, object]]:
    documents = []
    for stored in list_objects(store, prefix):
        try:
            documents.append(get_json(store, stored.key))
        except (StorageError, ValueError) as error:
            log.warning("ignoring %s: not readable (%s)", stored.key, error)
    return documents


def list_markers(store: ObjectStore, environment: str, log: RunLog) -> list[RecoveryMarker]:
    return [
        RecoveryMarker.model_validate(document)
        for document in _documents(store, f"markers/{environment}/", log)
    ]


def store_drill(store: ObjectStore, record: DrillRecord) -> None:
    put_json(store, record.key(), record.model_dump(mode="json"))


def last_drill(store: ObjectStore, environment: str, log: RunLog) -> DrillRecord | None:
    records = [
        DrillRecord.model_validate(document)
        for document in _documents(store, f"drills/{environment}/", log)
    ]
    return max(records, key=lambda record: record.finished_at, default=None)


def store_restore_point(store: ObjectStore, environment: str, point: RestorePoint) -> None:
    put_json(
        store, f"restore-points/{environment}/{point.name}.json", point.model_dump(mode="json")
    )


def find_restore_point(store: ObjectStore, environment: str, name: str) -> RestorePoint | None:
    try:
        return RestorePoint.model_validate(
            get_json(store, f"restore-points/{environment}/{name}.json")
        )
    except (StorageError, ValueError):
        return None


def push_metrics(gateway: str, environment: str, job: str, samples: dict[str, float]) -> None:
    """Replace the (job, environment) group on the Pushgateway with these gauges."""
    registry = CollectorRegistry()
    for name, value in samples.items():
        Gauge(name, name.replace("_", " "), registry=registry).set(value)
    push_to_gateway(
        gateway, job=job, grouping_key={"environment": environment}, registry=registry, timeout=10
    )
