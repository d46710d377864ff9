from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, status

from app.api import crud
from app.api.core.security import TokenSigner, verify_password
from app.api.deps import SessionDep
from app.api.routes import API_PREFIX
from app.api.routes.docs import error_responses
from app.api.schemas import Token, TokenRequest

router = APIRouter(prefix=f"{API_PREFIX}/auth", tags=["auth"])


@router.post("/token", response_model=Token, responses=error_responses(401))
def issue_token(credentials: TokenRequest, session: SessionDep, request: Request) -> Token:
    user = crud.user_by_username(session, credentials.username)
    # verify_password always hashes, so unknown users take as long as wrong passwords.
    if not verify_password(credentials.password, user.password_hash if user else None):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="incorrect username or password",
            headers={"WWW-Authenticate": "Bearer"},
        )
    assert user is not None
    signer: TokenSigner = request.app.state.token_signer
    return Token(access_token=signer.issue(user.id), expires_in=signer.ttl_s)
