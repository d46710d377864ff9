"""Bytes between the PostgreSQL tools and S3: pipes, a download read ahead, hashes as data passes.

A backup never lands in a temporary file: a tool's stdout is read into the upload as it comes, and
a restore's download is written into the tool (or unpacked) as it arrives.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Iterator
from queue import Empty, Queue
from typing import IO, Any

from socialnet_ops.adapters.postgres import BackupToolError, RunLog
from socialnet_ops.adapters.process import start_in_this_context
from socialnet_ops.adapters.s3 import StorageError

PIPE_BYTES = 1024 * 1024
PREFETCH_CHUNKS = 16


class ToolOutput:
    """A tool's stdout as a file; at its end the exit status is checked, so a failed tool is an
    error of the reader (and the upload reading it aborts) instead of a short, 'complete' object."""

    def __init__(self, process: subprocess.Popen[bytes], name: str, errors: OutputLog) -> None:
        self.process = process
        self.name = name
        self.errors = errors

    def read(self, size: int = -1) -> bytes:
        assert self.process.stdout is not None
        data = self.process.stdout.read(size)
        if not data:
            returncode = self.process.wait()
            self.errors.join()
            if returncode != 0:
                raise BackupToolError(
                    f"{self.name} exited with {returncode}: {self.errors.tail() or 'no message'}"
                )
        return data


class OutputLog:
    """Streams a tool's messages (stderr, or stdout and stderr merged) into the run log line by
    line and keeps the last lines. The pipe is read in a thread (the task's thread is busy moving
    the data); that thread carries the task's context, without which the lines would reach the
    terminal but not the run's logs."""

    def __init__(self, stream: IO[bytes] | None, prefix: str, log: RunLog) -> None:
        self.lines: deque[str] = deque(maxlen=30)
        self.logger = log
        self.prefix = prefix
        self.thread = start_in_this_context(self._pump, stream, name=f"{prefix}-output")

    def _pump(self, stream: IO[bytes] | None) -> None:
        if stream is None:
            return
        for raw in stream:
            line = raw.decode(errors="replace").rstrip()
            if line:
                self.lines.append(line)
                self.logger.info("%s: %s", self.prefix, line)

    def join(self) -> None:
        self.thread.join(timeout=10)

    def tail(self) -> str:
        return " | ".join(list(self.lines)[-5:])


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait()


def widen_pipe(stream: IO[bytes] | None) -> None:
    """A 1 MiB pipe instead of 64 KiB: fewer stalls between a tool and the network (Linux)."""
    if stream is not None and hasattr(fcntl, "F_SETPIPE_SZ"):
        with contextlib.suppress(OSError):
            fcntl.fcntl(stream.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)


def progress_logger(what: str, log: RunLog) -> Callable[[int], None]:
    step = 256 * 1024 * 1024
    marks = {"next": step}

    def report(size: int) -> None:
        if size >= marks["next"]:
            log.info("%s: %d MiB uploaded", what, size // 1048576)
            marks["next"] += step

    return report


def prefetch(chunks: Iterator[bytes], depth: int = PREFETCH_CHUNKS) -> Iterator[bytes]:
    """Download ahead in a thread, so the network and the tool reading the bytes overlap."""
    queue: Queue[bytes | BaseException | None] = Queue(maxsize=depth)
    stop = threading.Event()

    def pump() -> None:
        try:
            for chunk in chunks:
                if stop.is_set():
                    return
                queue.put(chunk)
            queue.put(None)
        except BaseException as error:
            queue.put(error)

    thread = threading.Thread(target=pump, name="s3-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            with contextlib.suppress(Empty):
                queue.get(timeout=0.1)


def feed(process: subprocess.Popen[bytes], chunks: Iterator[bytes]) -> tuple[int, str, str | None]:
    """Copy the object into the tool's stdin, hashing it; returns size, sha256 and a read error."""
    assert process.stdin is not None
    digest = hashlib.sha256()
    size = 0
    failure = None
    try:
        for chunk in chunks:
            digest.update(chunk)
            size += len(chunk)
            try:
                process.stdin.write(chunk)
            except BrokenPipeError:
                # The tool stopped reading (it failed); keep hashing so the report says why.
                continue
    except StorageError as error:
        failure = str(error)
    finally:
        with contextlib.suppress(BrokenPipeError):
            process.stdin.close()
    return size, digest.hexdigest(), failure


class HashingStream(io.RawIOBase):
    """The object's chunks as a readable file that hashes what passes (for tarfile's stream mode)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks
        self.pending = memoryview(b"")
        self.digest = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self.pending:
            chunk = next(self.chunks, b"")
            if not chunk:
                return 0
            self.digest.update(chunk)
            self.size += len(chunk)
            self.pending = memoryview(chunk)
        count = min(len(buffer), len(self.pending))
        buffer[:count] = self.pending[:count]
        self.pending = self.pending[count:]
        return count

    def drain(self) -> None:
        """Read (and hash) what the tar stream did not need: the checksum covers every byte."""
        self.pending = memoryview(b"")
        for chunk in self.chunks:
            self.digest.update(chunk)
            self.size += len(chunk)
