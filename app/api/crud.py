"""Data access: every read that returns posts or profiles is one SQL statement (no N+1)."""

from __future__ import annotations

from functools import cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    DateTime,
    Integer,
    Select,
    Subquery,
    bindparam,
    delete,
    exists,
    false,
    func,
    select,
    true,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.api import schemas
from app.api.core.cursor import Cursor
from app.api.core.security import hash_password
from app.api.models import Comment, Follow, Like, Post, User


class DuplicateUsernameError(Exception):
    pass


# --- users -------------------------------------------------------------------------------------


def create_user(session: Session, new_user: schemas.UserCreate) -> User:
    user = User(
        username=new_user.username,
        password_hash=hash_password(new_user.password),
        display_name=new_user.display_name or new_user.username,
        bio="",
    )
    session.add(user)
    try:
        session.commit()
    except IntegrityError as error:
        session.rollback()
        raise DuplicateUsernameError(new_user.username) from error
    return user


def _named(username: str) -> ColumnElement[bool]:
    """The user `username` names whatever its case; the expression of uq_users_username_key."""
    return func.lower(User.username.collate("C")) == schemas.username_key(username)


def user_by_username(session: Session, username: str) -> User | None:
    return session.scalars(select(User).where(_named(username))).one_or_none()


def user_by_id(session: Session, user_id: int) -> User | None:
    return session.get(User, user_id)


def revoke_tokens(session: Session, user: User) -> None:
    """Every token issued to `user` so far stops working, on every replica."""
    session.execute(
        update(User)
        .where(User.id == user.id)
        .values(token_generation=User.token_generation + 1)
        .execution_options(synchronize_session=False)
    )
    session.commit()


def update_user(session: Session, user: User, changes: schemas.UserUpdate) -> None:
    for field, value in changes.model_dump(exclude_unset=True, exclude_none=True).items():
        setattr(user, field, value)
    session.commit()


def profile(session: Session, username: str, viewer_id: int | None) -> schemas.Profile | None:
    followers = (
        select(func.count()).where(Follow.followee_id == User.id).correlate(User).scalar_subquery()
    )
    following = (
        select(func.count()).where(Follow.follower_id == User.id).correlate(User).scalar_subquery()
    )
    followed_by_me = (
        exists().where(Follow.follower_id == viewer_id, Follow.followee_id == User.id)
        if viewer_id is not None
        else false()
    )
    row = session.execute(
        select(
            User.username,
            User.display_name,
            User.bio,
            User.created_at,
            followers.label("followers"),
            following.label("following"),
            followed_by_me.label("followed_by_me"),
        ).where(_named(username))
    ).one_or_none()
    return None if row is None else schemas.Profile.model_validate(row._asdict())


def follow(session: Session, follower_id: int, followee_id: int) -> None:
    session.execute(
        insert(Follow)
        .values(follower_id=follower_id, followee_id=followee_id)
        .on_conflict_do_nothing()
    )
    session.commit()


def unfollow(session: Session, follower_id: int, followee_id: int) -> None:
    session.execute(
        delete(Follow).where(Follow.follower_id == follower_id, Follow.followee_id == followee_id)
    )
    session.commit()


# --- posts -------------------------------------------------------------------------------------


def create_post(session: Session, author: User, text: str) -> schemas.PostOut:
    new_post = Post(author_id=author.id, text=text)
    session.add(new_post)
    session.commit()
    return schemas.PostOut(
        id=new_post.id,
        author=schemas.Author(username=author.username, display_name=author.display_name),
        text=new_post.text,
        created_at=new_post.created_at,
        like_count=0,
        comment_count=0,
        liked_by_me=False,
    )


def post_author_id(session: Session, post_id: int) -> int | None:
    return session.scalar(select(Post.author_id).where(Post.id == post_id))


def delete_post(session: Session, post_id: int) -> None:
    session.execute(delete(Post).where(Post.id == post_id))
    session.commit()


def like(session: Session, post_id: int, user_id: int) -> bool:
    """False when the post does not exist (or was deleted meanwhile)."""
    try:
        session.execute(
            insert(Like).values(post_id=post_id, user_id=user_id).on_conflict_do_nothing()
        )
        session.commit()
    except IntegrityError:
        session.rollback()
        return False
    return True


def unlike(session: Session, post_id: int, user_id: int) -> None:
    session.execute(delete(Like).where(Like.post_id == post_id, Like.user_id == user_id))
    session.commit()


# Post reads are built once per shape with bind parameters and reused: constructing a Core
# statement per request cost more CPU than PostgreSQL spends answering it.
# Shapes differ by: a keyset cursor or not, and a known viewer (liked_by_me) or not.


def _after_cursor(keyset: bool) -> Any:
    if not keyset:
        return true()
    return tuple_(Post.created_at, Post.id) < tuple_(
        bindparam("before_created_at", type_=DateTime(timezone=True)),
        bindparam("before_id", type_=BigInteger),
    )


def _posts_with_counts(page: Subquery, personalised: bool) -> Select[Any]:
    """Decorates a page of post ids with author and counts; the counts run for the page only."""
    like_count = (
        select(func.count()).where(Like.post_id == Post.id).correlate(Post).scalar_subquery()
    )
    comment_count = (
        select(func.count()).where(Comment.post_id == Post.id).correlate(Post).scalar_subquery()
    )
    liked_by_me = (
        exists().where(
            Like.post_id == Post.id, Like.user_id == bindparam("viewer_id", type_=BigInteger)
        )
        if personalised
        else false()
    )
    return (
        select(
            Post.id,
            Post.text,
            Post.created_at,
            User.username,
            User.display_name,
            like_count.label("like_count"),
            comment_count.label("comment_count"),
            liked_by_me.label("liked_by_me"),
        )
        .join(page, page.c.id == Post.id)
        .join(User, User.id == Post.author_id)
        .order_by(Post.created_at.desc(), Post.id.desc())
    )


@cache
def _single_post_statement(personalised: bool) -> Select[Any]:
    page = select(Post.id).where(Post.id == bindparam("post_id", type_=BigInteger))
    return _posts_with_counts(page.subquery("page"), personalised)


@cache
def _author_posts_statement(keyset: bool, personalised: bool) -> Select[Any]:
    page = (
        select(Post.id)
        .where(Post.author_id == bindparam("author_id", type_=BigInteger), _after_cursor(keyset))
        .order_by(Post.created_at.desc(), Post.id.desc())
        .limit(bindparam("page_size", type_=Integer))
    )
    return _posts_with_counts(page.subquery("page"), personalised)


@cache
def _timeline_statement(keyset: bool) -> Select[Any]:
    """Newest posts of the viewer and everyone they follow.

    Each author contributes at most page_size of their newest posts (an index range scan per
    author, LATERAL), so the cost grows with the number of followees, not with post history.
    """
    viewer_id = bindparam("viewer_id", type_=BigInteger)
    authors = union_all(
        select(Follow.followee_id.label("author_id")).where(Follow.follower_id == viewer_id),
        select(viewer_id.label("author_id")),
    ).subquery("authors")
    newest_by_author = (
        select(Post.id, Post.created_at)
        .where(Post.author_id == authors.c.author_id, _after_cursor(keyset))
        .order_by(Post.created_at.desc(), Post.id.desc())
        .limit(bindparam("page_size", type_=Integer))
        .lateral("newest_by_author")
    )
    page = (
        select(newest_by_author.c.id)
        .select_from(authors)
        .join(newest_by_author, true())
        .order_by(newest_by_author.c.created_at.desc(), newest_by_author.c.id.desc())
        .limit(bindparam("page_size", type_=Integer))
    )
    return _posts_with_counts(page.subquery("page"), personalised=True)


def _page_parameters(
    viewer_id: int | None, cursor: Cursor | None, limit: int, **more: int
) -> dict[str, Any]:
    # One row beyond the page only tells whether another page exists.
    parameters: dict[str, Any] = {"viewer_id": viewer_id, "page_size": limit + 1, **more}
    if cursor is not None:
        parameters |= {"before_created_at": cursor.created_at, "before_id": cursor.id}
    return parameters


def _to_post(row: Any) -> schemas.PostOut:
    return schemas.PostOut(
        id=row.id,
        author=schemas.Author(username=row.username, display_name=row.display_name),
        text=row.text,
        created_at=row.created_at,
        like_count=row.like_count,
        comment_count=row.comment_count,
        liked_by_me=row.liked_by_me,
    )


def _page_of(
    session: Session, statement: Select[Any], parameters: dict[str, Any], limit: int
) -> schemas.PostPage:
    posts = [_to_post(row) for row in session.execute(statement, parameters)]
    has_more = len(posts) > limit
    posts = posts[:limit]
    next_cursor = (
        Cursor(created_at=posts[-1].created_at, id=posts[-1].id).encode() if has_more else None
    )
    return schemas.PostPage(items=posts, next_cursor=next_cursor)


def post(session: Session, post_id: int, viewer_id: int | None) -> schemas.PostOut | None:
    statement = _single_post_statement(personalised=viewer_id is not None)
    row = session.execute(statement, {"post_id": post_id, "viewer_id": viewer_id}).one_or_none()
    return None if row is None else _to_post(row)


def posts_by_author(
    session: Session, author_id: int, viewer_id: int | None, cursor: Cursor | None, limit: int
) -> schemas.PostPage:
    statement = _author_posts_statement(cursor is not None, viewer_id is not None)
    parameters = _page_parameters(viewer_id, cursor, limit, author_id=author_id)
    return _page_of(session, statement, parameters, limit)


def timeline_statement(viewer_id: int, cursor: Cursor | None, limit: int) -> Select[Any]:
    """The home timeline query with its values bound (for EXPLAIN and benchmarks)."""
    return _timeline_statement(cursor is not None).params(
        _page_parameters(viewer_id, cursor, limit)
    )


def timeline(
    session: Session, viewer_id: int, cursor: Cursor | None, limit: int
) -> schemas.PostPage:
    statement = _timeline_statement(cursor is not None)
    return _page_of(session, statement, _page_parameters(viewer_id, cursor, limit), limit)


# --- comments ----------------------------------------------------------------------------------


def create_comment(
    session: Session, post_id: int, author: User, text: str
) -> schemas.CommentOut | None:
    """None when the post does not exist (or was deleted meanwhile)."""
    comment = Comment(post_id=post_id, author_id=author.id, text=text)
    session.add(comment)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        return None
    return schemas.CommentOut(
        id=comment.id,
        post_id=post_id,
        author=schemas.Author(username=author.username, display_name=author.display_name),
        text=comment.text,
        created_at=comment.created_at,
    )


def comments(session: Session, post_id: int, limit: int) -> list[schemas.CommentOut]:
    rows = session.execute(
        select(Comment.id, Comment.text, Comment.created_at, User.username, User.display_name)
        .join(User, User.id == Comment.author_id)
        .where(Comment.post_id == post_id)
        .order_by(Comment.created_at, Comment.id)
        .limit(limit)
    )
    return [
        schemas.CommentOut(
            id=row.id,
            post_id=post_id,
            author=schemas.Author(username=row.username, display_name=row.display_name),
            text=row.text,
            created_at=row.created_at,
        )
        for row in rows
    ]


def post_exists(session: Session, post_id: int) -> bool:
    return bool(session.scalar(select(exists().where(Post.id == post_id))))
