"""The archive/restore command signs its S3 requests itself (stdlib only): check it signs exactly
as botocore does, so a real S3 accepts what the emulator (which does not check) accepts."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from unittest import mock

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from socialnet_ops.adapters.wal_archive import SHA256_HEADER, main, signed_request

pytestmark = pytest.mark.unit

MOMENT = datetime(2026, 1, 7, 3, 0, 5, tzinfo=UTC)


def botocore_authorization(method: str, url: str, headers: dict[str, str], body: bytes) -> str:
    request = AWSRequest(method=method, url=url, headers=headers, data=body)
    with mock.patch("botocore.auth.get_current_datetime", return_value=MOMENT.replace(tzinfo=None)):
        S3SigV4Auth(Credentials("AKIDEXAMPLE", "SECRET/EXAMPLE+KEY"), "s3", "eu-west-3").add_auth(
            request
        )
    return str(request.headers["Authorization"])


@pytest.mark.parametrize("method", ["PUT", "GET"])
def test_signature_v4_matches_botocore(monkeypatch: pytest.MonkeyPatch, method: str) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "SECRET/EXAMPLE+KEY")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    body = b"wal bytes" if method == "PUT" else b""
    digest = hashlib.sha256(body).hexdigest()
    extra = (
        {
            "x-amz-server-side-encryption": "AES256",
            SHA256_HEADER: digest,
            "content-type": "application/octet-stream",
        }
        if method == "PUT"
        else {}
    )
    ours = signed_request(
        method, "http://s3.example.test:9000", "eu-west-3", "socialnet-backups", "wal/local/000000010000000000000002",
        digest, extra, now=MOMENT,
    )  # fmt: skip
    headers = {
        name: value for name, value in ours.header_items() if name.lower() != "authorization"
    }
    expected = botocore_authorization(method, ours.full_url, headers, body)
    assert ours.get_header("Authorization") == expected


def test_missing_credentials_for_a_real_endpoint_fail_clearly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: object
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    segment = f"{tmp_path}/000000010000000000000002"
    with open(segment, "wb") as file:
        file.write(b"x")
    code = main(["push", segment, "000000010000000000000002", "--bucket", "b", "--prefix", "wal/x"])
    assert code == 1
    assert "no AWS credentials" in capsys.readouterr().err
