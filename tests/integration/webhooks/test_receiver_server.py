"""The receiver as the control plane runs it (the uvicorn command line of `_programs`), over real
sockets: a connection whose request headers do not arrive in time is closed."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest
from prefect.settings import PREFECT_API_URL

from socialnet_ops.control import control_plane
from socialnet_ops.core.paths import repo_root
from tests.integration.webhooks import payloads
from tests.integration.webhooks.conftest import WEBHOOK_TOKEN
from tests.integration.webhooks.fake_gitlab import free_port

pytestmark = pytest.mark.integration

HEADER_TIMEOUT = 1.0
PARTIAL_HEADER = b"POST /hooks/gitlab HTTP/1.1\r\nHost: receiver\r\nX-Gitlab-Event: Push"


@pytest.fixture(scope="module")
def receiver_port(
    gitlab_env: None, prefect_server: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[int]:
    folder = tmp_path_factory.mktemp("receiver")
    port = free_port()
    command = control_plane.receiver_command(port)
    environment = {
        **os.environ,
        "SOCIALNET_STATE_DIR": str(folder),
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "SOCIALNET_WEBHOOK_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
    }
    log = folder / "receiver.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=repo_root(), env=environment, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the receiver did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def _closed_after(sock: socket.socket, limit: float) -> float:
    """Seconds until the server closes `sock` (reading whatever it sends first)."""
    started = time.monotonic()
    sock.settimeout(limit)
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        pytest.fail(f"the connection was still open after {limit} s")
    return time.monotonic() - started


def test_a_connection_that_sends_nothing_is_closed(receiver_port: int) -> None:
    with _connect(receiver_port) as sock:
        assert _closed_after(sock, HEADER_TIMEOUT + 3) >= HEADER_TIMEOUT * 0.8


def test_a_connection_whose_headers_stop_halfway_is_closed(receiver_port: int) -> None:
    with _connect(receiver_port) as sock:
        sock.sendall(PARTIAL_HEADER)
        _closed_after(sock, HEADER_TIMEOUT + 3)


def test_trickling_the_headers_does_not_extend_the_deadline(receiver_port: int) -> None:
    with _connect(receiver_port) as sock:
        started = time.monotonic()
        sock.settimeout(0.2)
        closed = False
        for byte in PARTIAL_HEADER * 10:  # a byte every 0.2 s
            if time.monotonic() - started > HEADER_TIMEOUT + 3:
                break
            try:
                sock.sendall(bytes([byte]))
                closed = sock.recv(4096) == b""
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed = True
            if closed:
                break
        assert closed, f"the connection was still open after {HEADER_TIMEOUT + 3} s of trickle"
        assert time.monotonic() - started < HEADER_TIMEOUT + 1.5


def test_a_kept_alive_connection_gets_the_same_deadline_for_its_next_request(
    receiver_port: int,
) -> None:
    with _connect(receiver_port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: receiver\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 200")
        sock.sendall(PARTIAL_HEADER)  # cancels uvicorn's keep-alive timer: only ours is left
        _closed_after(sock, HEADER_TIMEOUT + 3)


def test_a_delivery_is_answered_as_before(receiver_port: int) -> None:
    response = httpx.post(
        f"http://127.0.0.1:{receiver_port}/hooks/gitlab",
        json=payloads.push("feature/login", payloads.new_sha()),
        headers={"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": WEBHOOK_TOKEN},
        timeout=10,
    )
    assert (response.status_code, response.json()["status"]) == (202, "ignored")


def test_headers_larger_than_16_kib_are_refused(receiver_port: int) -> None:
    with _connect(receiver_port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: receiver\r\n")
        try:
            for index in range(100):
                sock.sendall(b"X-Pad-%d: %s\r\n" % (index, b"a" * 1000))
        except (BrokenPipeError, ConnectionResetError):
            return
        sock.settimeout(5)
        try:
            answer = sock.recv(4096)
        except ConnectionResetError:
            return
        assert answer.startswith(b"HTTP/1.1 400") or answer == b""
