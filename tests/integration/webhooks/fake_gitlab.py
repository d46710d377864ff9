"""A fake GitLab REST API on 127.0.0.1 that records every call.

It serves what the platform uses: commit statuses, merge-request notes (added, listed, edited),
merge-request diffs, a merge request itself (head, state, mergeability) and its approvals, and
the token's user. `fail_next(n, status)` answers the next n calls with an error, to exercise
retries; `merge_request(iid, ...)` sets what GitLab says of a merge request.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

TOKEN = "glpat-fake-token-for-tests"
BOT = {"id": 501, "username": "socialnet-ops", "name": "socialnet-ops"}  # the token's user


@dataclass
class Call:
    method: str
    path: str
    json: Any
    token: str | None
    at: float = field(default_factory=time.monotonic)


class FakeGitLab:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.diffs: dict[int, list[str]] = {}  # merge request iid -> changed paths
        self.merge_requests: dict[int, dict[str, Any]] = {}  # iid -> what GitLab says of it
        self.stored_notes: dict[int, list[dict[str, Any]]] = {}  # iid -> its notes, as now
        self._next_note = 1000
        self._failures: list[int] = []
        self._lock = threading.Lock()
        self.url = ""
        self.app = Starlette(
            routes=[
                Route("/api/v4/projects/{project}/statuses/{sha}", self._status, methods=["POST"]),
                Route(
                    "/api/v4/projects/{project}/merge_requests/{iid:int}/notes",
                    self._note,
                    methods=["POST"],
                ),
                Route(
                    "/api/v4/projects/{project}/merge_requests/{iid:int}/notes",
                    self._list_notes,
                    methods=["GET"],
                ),
                Route(
                    "/api/v4/projects/{project}/merge_requests/{iid:int}/notes/{note:int}",
                    self._edit_note,
                    methods=["PUT"],
                ),
                Route(
                    "/api/v4/projects/{project}/merge_requests/{iid:int}/diffs",
                    self._diffs,
                    methods=["GET"],
                ),
                Route(
                    "/api/v4/projects/{project}/merge_requests/{iid:int}",
                    self._merge_request,
                    methods=["GET"],
                ),
                Route(
                    "/api/v4/projects/{project}/merge_requests/{iid:int}/approvals",
                    self._approvals,
                    methods=["GET"],
                ),
                Route("/api/v4/user", self._user, methods=["GET"]),
            ]
        )

    def fail_next(self, count: int, status: int = 503) -> None:
        with self._lock:
            self._failures.extend([status] * count)

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self._failures.clear()
            self.diffs.clear()
            self.merge_requests.clear()
            self.stored_notes.clear()

    def merge_request(
        self,
        iid: int,
        sha: str,
        *,
        state: str = "opened",
        approved: bool = False,
        mergeable: bool | None = None,
    ) -> None:
        """What GitLab says of merge request !iid: its head, state, approval and mergeability
        (`detailed_merge_status`: mergeable when approved unless told otherwise)."""
        mergeable = approved if mergeable is None else mergeable
        with self._lock:
            self.merge_requests[iid] = {
                "id": 90000 + iid,
                "iid": iid,
                "sha": sha,
                "state": state,
                "detailed_merge_status": "mergeable" if mergeable else "not_approved",
                "approved": approved,
                "target_branch": "main",
            }

    def note_bodies(self, iid: int) -> list[str]:
        """The merge request's notes as they are now (edits applied), oldest first."""
        with self._lock:
            return [note["body"] for note in self.stored_notes.get(iid, [])]

    def add_note(self, iid: int, body: str, author: dict[str, Any] | None = None) -> int:
        """A note someone else wrote (a person, or a system note)."""
        with self._lock:
            return self._store(iid, body, author or {"id": 7, "username": "grace"})

    def _store(self, iid: int, body: str, author: dict[str, Any]) -> int:
        self._next_note += 1
        note = {"id": self._next_note, "body": body, "author": author, "system": False}
        self.stored_notes.setdefault(iid, []).append(note)
        return self._next_note

    def statuses(self, sha: str | None = None) -> list[dict[str, Any]]:
        return [
            {**call.json, "sha": call.path.rsplit("/", 1)[1]}
            for call in list(self.calls)
            if "/statuses/" in call.path and (sha is None or call.path.endswith(sha))
        ]

    def notes(self, iid: int | None = None) -> list[str]:
        """The notes added (POST), in order; `note_bodies` gives them as edited since."""
        return [
            call.json["body"]
            for call in list(self.calls)
            if call.method == "POST"
            and call.path.endswith("/notes")
            and (iid is None or f"/merge_requests/{iid}/" in call.path)
        ]

    def wait_for(self, predicate: Any, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        raise AssertionError(f"the fake GitLab did not see the expected calls: {self.calls}")

    async def _record(self, request: Request) -> JSONResponse | None:
        body = await request.json() if request.method in {"POST", "PUT"} else None
        token = request.headers.get("private-token")
        with self._lock:
            self.calls.append(Call(request.method, request.url.path, body, token))
            failure = self._failures.pop(0) if self._failures else None
        if token != TOKEN:
            return JSONResponse({"message": "401 Unauthorized"}, status_code=401)
        if failure:
            return JSONResponse({"message": "unavailable"}, status_code=failure)
        return None

    async def _status(self, request: Request) -> JSONResponse:
        error = await self._record(request)
        if error:
            return error
        data = self.calls[-1].json
        if data.get("state") not in {"pending", "running", "success", "failed", "canceled"}:
            return JSONResponse({"message": "state is invalid"}, status_code=400)
        return JSONResponse({"id": len(self.calls), "sha": request.path_params["sha"], **data}, 201)

    async def _note(self, request: Request) -> JSONResponse:
        error = await self._record(request)
        if error:
            return error
        body = self.calls[-1].json["body"]
        with self._lock:
            note_id = self._store(request.path_params["iid"], body, BOT)
        return JSONResponse({"id": note_id, "body": body, "author": BOT}, 201)

    async def _list_notes(self, request: Request) -> JSONResponse:
        error = await self._record(request)
        if error:
            return error
        with self._lock:
            notes = [dict(note) for note in self.stored_notes.get(request.path_params["iid"], [])]
        return JSONResponse(notes)

    async def _edit_note(self, request: Request) -> JSONResponse:
        error = await self._record(request)
        if error:
            return error
        body = (self.calls[-1].json or {}).get("body")
        with self._lock:
            for note in self.stored_notes.get(request.path_params["iid"], []):
                if note["id"] == request.path_params["note"]:
                    if note["author"]["id"] != BOT["id"]:
                        return JSONResponse({"message": "403 Forbidden"}, status_code=403)
                    note["body"] = body
                    return JSONResponse(dict(note))
        return JSONResponse({"message": "404 Note Not Found"}, status_code=404)

    async def _merge_request(self, request: Request) -> JSONResponse:
        error = await self._record(request)
        if error:
            return error
        found = self.merge_requests.get(request.path_params["iid"])
        if found is None:
            return JSONResponse({"message": "404 Not found"}, status_code=404)
        return JSONResponse({k: v for k, v in found.items() if k != "approved"})

    async def _approvals(self, request: Request) -> JSONResponse:
        error = await self._record(request)
        if error:
            return error
        found = self.merge_requests.get(request.path_params["iid"])
        if found is None:
            return JSONResponse({"message": "404 Not found"}, status_code=404)
        return JSONResponse({"iid": found["iid"], "approved": found["approved"]})

    async def _user(self, request: Request) -> JSONResponse:
        error = await self._record(request)
        return error or JSONResponse(BOT)

    async def _diffs(self, request: Request) -> JSONResponse:
        error = await self._record(request)
        if error:
            return error
        paths = self.diffs.get(request.path_params["iid"], [])
        return JSONResponse(
            [{"old_path": p, "new_path": p, "new_file": False, "diff": ""} for p in paths]
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(app: Any, port: int | None = None) -> Iterator[str]:
    """Serve an ASGI app with uvicorn in a thread on 127.0.0.1; yields its base URL."""
    port = port or free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def running_fake_gitlab() -> Iterator[FakeGitLab]:
    fake = FakeGitLab()
    with serve(fake.app) as url:
        fake.url = url
        yield fake
