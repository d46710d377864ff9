"""Pure parts of the kubernetes platform and of the API emulator's patch handling."""

from __future__ import annotations

from typing import Any

import pytest

from socialnet_ops.platforms.base import PlatformError
from socialnet_ops.platforms.kubernetes.platform import deep_merge, parse_description, split_image
from socialnet_ops.platforms.kubernetes.rollout import rollout_state
from tests.support.kube_emulator import label_selector_matches
from tests.support.kube_patch import json_patch, strategic_merge_patch

pytestmark = pytest.mark.unit


def deployment(generation: int = 2, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "socialnet-api", "generation": generation},
        "spec": {"replicas": 2},
        "status": status,
    }


def test_rollout_waits_for_the_controller_to_observe_the_spec() -> None:
    state = rollout_state(
        deployment(observedGeneration=1, updatedReplicas=2, replicas=2, availableReplicas=2)
    )
    assert not state.done and not state.failed and "generation 2" in state.message


def test_rollout_done_when_every_replica_is_updated_and_available() -> None:
    state = rollout_state(
        deployment(observedGeneration=2, updatedReplicas=2, replicas=2, availableReplicas=2)
    )
    assert state.done


@pytest.mark.parametrize(
    ("status", "message"),
    [
        ({"updatedReplicas": 1, "replicas": 3, "availableReplicas": 2}, "1 of 2 replicas updated"),
        ({"updatedReplicas": 2, "replicas": 3, "availableReplicas": 2}, "old replicas pending"),
        (
            {"updatedReplicas": 2, "replicas": 2, "availableReplicas": 1},
            "1 of 2 updated replicas available",
        ),
    ],
)
def test_rollout_in_progress(status: dict[str, int], message: str) -> None:
    state = rollout_state(deployment(observedGeneration=2, **status))
    assert not state.done and not state.failed and message in state.message


def test_progress_deadline_exceeded_is_a_failure_with_the_reason() -> None:
    condition = {
        "type": "Progressing",
        "status": "False",
        "reason": "ProgressDeadlineExceeded",
        "message": 'ReplicaSet "socialnet-api-abc" has timed out progressing.',
    }
    state = rollout_state(deployment(observedGeneration=2, conditions=[condition]))
    assert state.failed
    assert state.message == (
        'socialnet-api: ProgressDeadlineExceeded: ReplicaSet "socialnet-api-abc" has timed out progressing.'
    )


def test_split_image_and_descriptions() -> None:
    assert split_image("registry.example/team/socialnet-api:1.2.3") == (
        "registry.example/team",
        "socialnet-api",
        "1.2.3",
    )
    with pytest.raises(PlatformError, match="no tag"):
        split_image("registry.example:5000/socialnet-api")
    assert parse_description("stable=1.2.3 canary=-") == {"stable": "1.2.3", "canary": "-"}
    assert deep_merge({"a": {"b": 1, "c": 2}, "l": [1]}, {"a": {"b": 3}, "l": [2]}) == {
        "a": {"b": 3, "c": 2},
        "l": [2],
    }


def test_strategic_merge_patch_merges_containers_by_name() -> None:
    live = {
        "spec": {
            "containers": [
                {
                    "name": "api",
                    "image": "api:1",
                    "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                },
                {"name": "sidecar", "image": "proxy:1"},
            ]
        }
    }
    patch = {
        "spec": {
            "$setElementOrder/containers": [{"name": "api"}, {"name": "sidecar"}],
            "containers": [
                {
                    "name": "api",
                    "image": "api:2",
                    "$setElementOrder/env": [{"name": "B"}, {"name": "C"}],
                    "env": [{"name": "A", "$patch": "delete"}, {"name": "C", "value": "3"}],
                }
            ],
        }
    }
    merged = strategic_merge_patch(live, patch)
    api, sidecar = merged["spec"]["containers"]
    assert api["image"] == "api:2" and sidecar == {"name": "sidecar", "image": "proxy:1"}
    assert api["env"] == [{"name": "B", "value": "2"}, {"name": "C", "value": "3"}]


def test_json_patch_and_selectors() -> None:
    document = {"metadata": {"annotations": {"a/b": "1"}}}
    patched = json_patch(
        document, [{"op": "replace", "path": "/metadata/annotations/a~1b", "value": "2"}]
    )
    assert patched["metadata"]["annotations"]["a/b"] == "2"
    labels = {"app": "api", "track": "stable"}
    assert label_selector_matches("app=api,track in (stable,canary)", labels)
    assert not label_selector_matches("app=api,!track", labels)
    assert label_selector_matches("owner!=helm", labels)
