from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from app.api import crud
from app.api.deps import (
    CurrentUser,
    OptionalUser,
    PageDep,
    SessionDep,
    UsernameInPath,
    invalid_input,
)
from app.api.models import User
from app.api.routes import API_PREFIX
from app.api.routes.docs import OPTIONAL_AUTH, error_responses
from app.api.schemas import PostPage, Profile, UserCreate, UserUpdate

router = APIRouter(prefix=f"{API_PREFIX}/users", tags=["users"])


def _profile_or_404(session: SessionDep, username: str, viewer: User | None) -> Profile:
    found = crud.profile(session, username, viewer.id if viewer else None)
    if found is None:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail="user not found")
    return found


def _user_or_404(session: SessionDep, username: str) -> User:
    user = crud.user_by_username(session, username)
    if user is None:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail="user not found")
    return user


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=Profile,
    responses=error_responses(409),
)
def sign_up(new_user: UserCreate, session: SessionDep) -> Profile:
    try:
        user = crud.create_user(session, new_user)
    except crud.DuplicateUsernameError as error:
        raise HTTPException(
            status_code=status.HTTP_409_CONFLICT, detail="username already taken"
        ) from error
    return Profile(
        username=user.username,
        display_name=user.display_name,
        bio=user.bio,
        created_at=user.created_at,
        followers=0,
        following=0,
        followed_by_me=False,
    )


# Declared before /{username}: "me" is shorter than any username, so it can never shadow one.
@router.get("/me", response_model=Profile, responses=error_responses(401))
def my_profile(user: CurrentUser, session: SessionDep) -> Profile:
    return _profile_or_404(session, user.username, user)


@router.patch("/me", response_model=Profile, responses=error_responses(401))
def update_my_profile(changes: UserUpdate, user: CurrentUser, session: SessionDep) -> Profile:
    crud.update_user(session, user, changes)
    return _profile_or_404(session, user.username, user)


@router.get(
    "/{username}",
    response_model=Profile,
    responses=error_responses(401, 404),
    openapi_extra=OPTIONAL_AUTH,
)
def user_profile(username: UsernameInPath, viewer: OptionalUser, session: SessionDep) -> Profile:
    return _profile_or_404(session, username, viewer)


@router.get(
    "/{username}/posts",
    response_model=PostPage,
    responses=error_responses(401, 404),
    openapi_extra=OPTIONAL_AUTH,
)
def user_posts(
    username: UsernameInPath, page: PageDep, viewer: OptionalUser, session: SessionDep
) -> PostPage:
    author = _user_or_404(session, username)
    return crud.posts_by_author(
        session, author.id, viewer.id if viewer else None, page.cursor, page.limit
    )


def _followee(session: SessionDep, username: str, follower: User) -> User:
    followee = _user_or_404(session, username)
    if followee.id == follower.id:
        raise invalid_input(("path", "username"), "cannot follow yourself", username)
    return followee


@router.post(
    "/{username}/follow",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(401, 404),
)
def follow(username: UsernameInPath, user: CurrentUser, session: SessionDep) -> None:
    crud.follow(session, user.id, _followee(session, username, user).id)


@router.delete(
    "/{username}/follow",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(401, 404),
)
def unfollow(username: UsernameInPath, user: CurrentUser, session: SessionDep) -> None:
    crud.unfollow(session, user.id, _followee(session, username, user).id)
