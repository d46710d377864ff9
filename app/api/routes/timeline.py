from __future__ import annotations

from fastapi import APIRouter

from app.api import crud
from app.api.deps import CurrentUser, PageDep, SessionDep
from app.api.routes import API_PREFIX
from app.api.routes.docs import error_responses
from app.api.schemas import PostPage

router = APIRouter(prefix=API_PREFIX, tags=["timeline"])


@router.get("/timeline", response_model=PostPage, responses=error_responses(401))
def home_timeline(user: CurrentUser, page: PageDep, session: SessionDep) -> PostPage:
    return crud.timeline(session, user.id, page.cursor, page.limit)
