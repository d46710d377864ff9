from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status

from app.api import crud
from app.api.deps import CurrentUser, OptionalUser, PostId, SessionDep
from app.api.routes import API_PREFIX
from app.api.routes.docs import OPTIONAL_AUTH, error_responses
from app.api.schemas import CommentCreate, CommentOut, PostCreate, PostOut

router = APIRouter(prefix=f"{API_PREFIX}/posts", tags=["posts"])


def _post_not_found() -> HTTPException:
    return HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail="post not found")


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=PostOut,
    responses=error_responses(401),
)
def create_post(new_post: PostCreate, user: CurrentUser, session: SessionDep) -> PostOut:
    return crud.create_post(session, user, new_post.text)


@router.get(
    "/{post_id}",
    response_model=PostOut,
    responses=error_responses(401, 404),
    openapi_extra=OPTIONAL_AUTH,
)
def read_post(post_id: PostId, viewer: OptionalUser, session: SessionDep) -> PostOut:
    found = crud.post(session, post_id, viewer.id if viewer else None)
    if found is None:
        raise _post_not_found()
    return found


@router.delete(
    "/{post_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(401, 403, 404),
)
def delete_post(post_id: PostId, user: CurrentUser, session: SessionDep) -> None:
    author_id = crud.post_author_id(session, post_id)
    if author_id is None:
        raise _post_not_found()
    if author_id != user.id:
        raise HTTPException(
            status_code=status.HTTP_403_FORBIDDEN, detail="only the author can delete a post"
        )
    crud.delete_post(session, post_id)


@router.post(
    "/{post_id}/like",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(401, 404),
)
def like(post_id: PostId, user: CurrentUser, session: SessionDep) -> None:
    if not crud.like(session, post_id, user.id):
        raise _post_not_found()


@router.delete(
    "/{post_id}/like",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(401, 404),
)
def unlike(post_id: PostId, user: CurrentUser, session: SessionDep) -> None:
    if not crud.post_exists(session, post_id):
        raise _post_not_found()
    crud.unlike(session, post_id, user.id)


@router.post(
    "/{post_id}/comments",
    status_code=status.HTTP_201_CREATED,
    response_model=CommentOut,
    responses=error_responses(401, 404),
)
def add_comment(
    post_id: PostId, new_comment: CommentCreate, user: CurrentUser, session: SessionDep
) -> CommentOut:
    comment = crud.create_comment(session, post_id, user, new_comment.text)
    if comment is None:
        raise _post_not_found()
    return comment


@router.get("/{post_id}/comments", response_model=list[CommentOut], responses=error_responses(404))
def list_comments(
    post_id: PostId,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500, description="Oldest first, at most this many")] = 100,
) -> list[CommentOut]:
    if not crud.post_exists(session, post_id):
        raise _post_not_found()
    return crud.comments(session, post_id, limit)
