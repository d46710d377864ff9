"""Property-based fuzzing of every operation in the OpenAPI document (schemathesis 4, in-process).

Generated requests, valid and invalid, must never produce a 5xx, and every response must match
what the document declares (status code, content type, body schema)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis import Case
from schemathesis.specs.openapi.checks import allow_header_conformance, positive_data_acceptance
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.core.config import Settings
from app.api.main import create_app
from tests.integration.api.conftest import sign_up

pytestmark = pytest.mark.integration


class ForwardingApp:
    """The schema must be loaded at import (pytest parametrizes at collection) but the database
    exists only once fixtures run, so requests go through this stand-in to the real app."""

    def __init__(self, target: ASGIApp) -> None:
        self.target = target

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.target(scope, receive, send)


# Serves /openapi.json without touching a database; replaced by the real app before any call.
app_under_test = ForwardingApp(create_app(Settings(token_secret="schema-only")))
schema = schemathesis.openapi.from_asgi("/openapi.json", app_under_test)


class FuzzerToken:
    """Bearer auth through schemathesis, which leaves it off the cases that test a missing token
    (a header added by the test itself would make those look accepted)."""

    value = ""
    # Logging out revokes the caller's tokens: that operation gets a member of its own.
    logout_value = ""

    def get(self, case: Case, context: schemathesis.AuthContext) -> str:
        return self.logout_value if case.operation.path == "/api/auth/logout" else self.value

    def set(self, case: Case, data: str, context: schemathesis.AuthContext) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


schema.auth()(FuzzerToken)


@pytest.fixture(scope="module")
def fuzz_token(api_settings: Settings) -> Iterator[str]:
    app = create_app(api_settings)
    with TestClient(app) as client:
        member = sign_up(client, "fuzzer")
        # Something to like, comment and page through, so generated ids sometimes hit real rows.
        for text in ("fuzz target one", "fuzz target two"):
            client.post("/api/posts", headers=member.headers, json={"text": text})
        app_under_test.target = app
        FuzzerToken.value = member.token
        FuzzerToken.logout_value = sign_up(client, "fuzz_logout").token
        yield member.token


# Every built-in check runs except two that cannot hold by design:
# - positive_data_acceptance: a cursor is opaque, so most schema-valid strings are still malformed
#   (and must be 422);
# - allow_header_conformance: Starlette's 405 lists the methods of one route, not of the path.
EXCLUDED_CHECKS = [positive_data_acceptance, allow_header_conformance]


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi_document(case: Case, fuzz_token: str) -> None:
    case.call_and_validate(excluded_checks=EXCLUDED_CHECKS)
