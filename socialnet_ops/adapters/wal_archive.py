"""PostgreSQL's `archive_command` and `restore_command`: WAL segments to and from S3.

PostgreSQL runs these as its own system user, once per 16 MiB segment, so this module uses the
standard library only (no boto3, no project imports): any `python3` on the database host runs it
as a script, in a few milliseconds, even when the project's virtualenv is not readable by that
user. Requests are signed with AWS Signature V4 over path-style URLs.

    archive_command = 'python3 .../wal_archive.py push %p %f --bucket B --prefix wal/local ...'
    restore_command = 'python3 .../wal_archive.py fetch %f %p --bucket B --prefix wal/local ...'

Exit status is what PostgreSQL acts on: 0 archived (or fetched), non-zero otherwise. A segment
already archived with identical bytes is a success (a retry after a lost acknowledgement); with
different bytes it is refused, never overwritten.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import hmac
import ipaddress
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

# The AWS emulator on loopback accepts any key; real endpoints need the server's credentials.
_EMULATOR_KEY = "testing"
SHA256_HEADER = "x-amz-meta-sha256"
TIMEOUT_S = 60


class ArchiveError(Exception):
    """The segment could not be archived or fetched; the message says which and why."""


class NotInArchiveError(ArchiveError):
    """The archive has no such file: normal at the end of recovery, not worth a loud message."""


def _is_loopback(url: str) -> bool:
    # core.network.is_loopback's twin: PostgreSQL runs this file by path (archive_command), with
    # no project package on sys.path, so it imports nothing of the project.
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _credentials(endpoint: str) -> tuple[str, str, str | None]:
    access = os.environ.get("AWS_ACCESS_KEY_ID")
    secret = os.environ.get("AWS_SECRET_ACCESS_KEY")
    if access and secret:
        return access, secret, os.environ.get("AWS_SESSION_TOKEN")
    if _is_loopback(endpoint):
        return _EMULATOR_KEY, _EMULATOR_KEY, None
    raise ArchiveError(
        "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment "
        "of the PostgreSQL server"
    )


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def signed_request(
    method: str,
    endpoint: str,
    region: str,
    bucket: str,
    key: str,
    payload_sha256: str,
    extra_headers: dict[str, str] | None = None,
    now: dt.datetime | None = None,
) -> urllib.request.Request:
    """An S3 request signed with AWS Signature V4 (path-style, no query string)."""
    access, secret, token = _credentials(endpoint)
    moment = now or dt.datetime.now(dt.UTC)
    amz_date = moment.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    parts = urllib.parse.urlsplit(endpoint)
    path = "/" + urllib.parse.quote(bucket, safe="") + "/" + urllib.parse.quote(key, safe="/-_.~")
    headers = {
        "host": parts.netloc,
        "x-amz-date": amz_date,
        "x-amz-content-sha256": payload_sha256,
        **{name.lower(): value for name, value in (extra_headers or {}).items()},
    }
    if token:
        headers["x-amz-security-token"] = token
    names = sorted(headers)
    canonical = "\n".join(
        [
            method,
            path,
            "",
            "".join(f"{name}:{headers[name].strip()}\n" for name in names),
            ";".join(names),
            payload_sha256,
        ]
    )
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    signing_key = _hmac(
        _hmac(_hmac(_hmac(f"AWS4{secret}".encode(), day), region), "s3"), "aws4_request"
    )
    signature = hmac.new(signing_key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access}/{scope}, SignedHeaders={';'.join(names)}, "
        f"Signature={signature}"
    )
    url = f"{parts.scheme}://{parts.netloc}{path}"
    request = urllib.request.Request(url, method=method)  # noqa: S310 - endpoint is configuration
    for name, value in headers.items():
        if name != "host":
            request.add_header(name, value)
    return request


def _open(
    request: urllib.request.Request, data: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(request, data=data, timeout=TIMEOUT_S) as response:  # noqa: S310
            return (
                response.status,
                {k.lower(): v for k, v in response.headers.items()},
                response.read(),
            )
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()
    except (urllib.error.URLError, OSError) as error:
        raise ArchiveError(f"{request.full_url}: {error}") from None


_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def push(path: Path, name: str, bucket: str, prefix: str, endpoint: str, region: str) -> str:
    """Archive one WAL file; return what happened, raise ArchiveError when it did not."""
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    key = f"{prefix.strip('/')}/{name}"
    status, headers, _ = _open(signed_request("HEAD", endpoint, region, bucket, key, _EMPTY_SHA256))
    if status == 200:
        if headers.get(SHA256_HEADER) == digest:
            return f"{name} already archived with the same content"
        raise ArchiveError(
            f"s3://{bucket}/{key} already exists with different content; refusing to overwrite "
            "(another server archives to the same prefix?)"
        )
    if status not in (403, 404):
        raise ArchiveError(f"HEAD s3://{bucket}/{key} answered {status}")
    request = signed_request(
        "PUT",
        endpoint,
        region,
        bucket,
        key,
        digest,
        {
            "content-length": str(len(data)),
            "content-type": "application/octet-stream",
            "x-amz-server-side-encryption": "AES256",
            SHA256_HEADER: digest,
        },
    )
    status, _, body = _open(request, data)
    if status != 200:
        raise ArchiveError(f"PUT s3://{bucket}/{key} answered {status}: {body[:300]!r}")
    return f"archived {name} ({len(data)} bytes) to s3://{bucket}/{key}"


def fetch(
    name: str, destination: Path, bucket: str, prefix: str, endpoint: str, region: str
) -> str:
    key = f"{prefix.strip('/')}/{name}"
    status, headers, body = _open(
        signed_request("GET", endpoint, region, bucket, key, _EMPTY_SHA256)
    )
    if status in (403, 404):
        raise NotInArchiveError(f"{name} is not in s3://{bucket}/{prefix}")
    if status != 200:
        raise ArchiveError(f"GET s3://{bucket}/{key} answered {status}: {body[:300]!r}")
    expected = headers.get(SHA256_HEADER)
    if expected and hashlib.sha256(body).hexdigest() != expected:
        raise ArchiveError(
            f"s3://{bucket}/{key} is corrupt: its SHA-256 differs from the archived one"
        )
    partial = destination.with_name(destination.name + ".partial")
    partial.write_bytes(body)
    partial.replace(destination)
    return f"restored {name} from s3://{bucket}/{key}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wal_archive", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["push", "fetch"])
    parser.add_argument("first", help="push: %%p (path); fetch: %%f (file name)")
    parser.add_argument("second", help="push: %%f (file name); fetch: %%p (destination)")
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--endpoint-url", default=None)
    parser.add_argument("--region", default="eu-west-3")
    parser.add_argument("--quiet", action="store_true", help="print nothing on success")
    args = parser.parse_args(argv)
    endpoint = args.endpoint_url or f"https://s3.{args.region}.amazonaws.com"
    try:
        if args.action == "push":
            message = push(
                Path(args.first), args.second, args.bucket, args.prefix, endpoint, args.region
            )
        else:
            message = fetch(
                args.first, Path(args.second), args.bucket, args.prefix, endpoint, args.region
            )
    except NotInArchiveError:
        return 1  # PostgreSQL asks for files past the end of the archive: silence is expected
    except (ArchiveError, OSError) as error:
        print(f"wal_archive {args.action} {args.first}: {error}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"wal_archive: {message}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
