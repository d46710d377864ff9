"""Request dependencies: database session, authenticated user, paging, fault injection."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from app.api import crud
from app.api.core.cursor import Cursor
from app.api.core.security import MAX_ID, InvalidTokenError, TokenSigner
from app.api.models import User
from app.api.schemas import USERNAME_PATTERN


def get_db(request: Request) -> Iterator[Session]:
    with request.app.state.session_factory() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_db)]

_bearer = HTTPBearer(auto_error=False, description="Access token from POST /api/auth/token")


def _unauthorized(reason: str) -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=reason,
        headers={"WWW-Authenticate": "Bearer"},
    )


def optional_user(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User | None:
    """The caller when a token is sent; an invalid token is a 401, never an anonymous call."""
    if credentials is None:
        return None
    signer: TokenSigner = request.app.state.token_signer
    try:
        subject = signer.subject_of(credentials.credentials)
    except InvalidTokenError as error:
        raise _unauthorized("invalid or expired token") from error
    user = crud.user_by_id(session, subject.user_id)
    # A token of an earlier generation was revoked (logout).
    if user is None or user.token_generation != subject.generation:
        raise _unauthorized("invalid or expired token")
    return user


# Dependencies without I/O are async: they run on the event loop, not in a worker thread.
async def current_user(user: Annotated[User | None, Depends(optional_user)]) -> User:
    if user is None:
        raise _unauthorized("not authenticated")
    return user


OptionalUser = Annotated[User | None, Depends(optional_user)]
CurrentUser = Annotated[User, Depends(current_user)]

PostId = Annotated[int, Path(ge=1, le=MAX_ID, description="Post id")]
UsernameInPath = Annotated[str, Path(pattern=USERNAME_PATTERN)]


def invalid_input(location: tuple[str, ...], reason: str, value: object) -> RequestValidationError:
    """A 422 shaped like FastAPI's own validation errors, for checks done in handlers."""
    return RequestValidationError(
        [{"type": "value_error", "loc": location, "msg": reason, "input": value}]
    )


@dataclass(frozen=True)
class PageRequest:
    cursor: Cursor | None
    limit: int


async def page_request(
    cursor: Annotated[
        str | None,
        Query(max_length=128, description="next_cursor of the previous page"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> PageRequest:
    if cursor is None:
        return PageRequest(cursor=None, limit=limit)
    try:
        return PageRequest(cursor=Cursor.decode(cursor), limit=limit)
    except ValueError as error:
        raise invalid_input(("query", "cursor"), str(error), cursor) from error


PageDep = Annotated[PageRequest, Depends(page_request)]


async def inject_faults(request: Request) -> None:
    await request.app.state.fault_injector.apply()
