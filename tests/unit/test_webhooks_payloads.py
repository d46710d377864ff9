"""Every sha the receiver reads from a GitLab payload is a 40-hex commit id (issue #17)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.webhooks import payloads
from webhooks.gitlab import PayloadError, parse_event

pytestmark = pytest.mark.unit

SHA = "3f1c2a9b7d4e5f60718293a4b5c6d7e8f9012345"


def _set(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    *parents, last = path.split(".")
    place = body
    for key in parents:
        place = place[key]
    place[last] = value
    return body


BODIES = {
    "push": lambda: payloads.push("develop", SHA),
    "tag_push": lambda: payloads.tag_push("v1.0.0", SHA),
    "merge_request": lambda: payloads.merge_request(5, SHA, "update", oldrev=SHA),
    "pipeline": lambda: payloads.pipeline("main", SHA),
}


@pytest.mark.parametrize(
    ("kind", "field"),
    [
        ("push", "checkout_sha"),
        ("push", "after"),
        ("push", "before"),
        ("tag_push", "checkout_sha"),
        ("tag_push", "after"),
        ("merge_request", "object_attributes.last_commit.id"),
        ("merge_request", "object_attributes.oldrev"),
        ("pipeline", "object_attributes.sha"),
    ],
)
@pytest.mark.parametrize("value", ["HEAD", "develop", SHA[:12], SHA + "0", "g" * 40, ""])
def test_a_sha_field_that_is_not_a_commit_id_is_refused_naming_it(
    kind: str, field: str, value: str
) -> None:
    with pytest.raises(PayloadError) as raised:
        parse_event(kind, _set(BODIES[kind](), field, value), "d")
    assert str(raised.value) == f"{field}: {value!r} is not a 40-hex commit id"


def test_the_refusal_is_one_line_and_short_whatever_was_sent() -> None:
    body = _set(payloads.push("develop", SHA), "checkout_sha", "x\n" * 10_000)
    with pytest.raises(PayloadError) as raised:
        parse_event("push", body, "d")
    message = str(raised.value)
    assert "\n" not in message and len(message) < 200
    assert message.startswith("checkout_sha: 'x\\nx\\n")


def test_a_commit_id_in_capitals_is_taken_in_git_s_lower_case() -> None:
    event = parse_event("push", payloads.push("develop", SHA.upper()), "d")
    assert event.sha == SHA


def test_a_deleted_ref_and_absent_optional_shas_are_still_accepted() -> None:
    deleted = parse_event("push", payloads.push("develop", "0" * 40), "d")
    assert deleted.sha == "0" * 40  # checkout_sha null: the ref was deleted (ignored later)
    opened = parse_event("merge_request", payloads.merge_request(5, SHA), "d")
    assert (opened.sha, opened.oldrev) == (SHA, None)
