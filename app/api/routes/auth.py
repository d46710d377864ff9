from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, status

from app.api import crud
from app.api.core.login_throttle import LoginThrottle, TooManyFailedLoginsError
from app.api.core.security import TokenSigner, verify_password
from app.api.deps import CurrentUser, SessionDep
from app.api.routes import API_PREFIX
from app.api.routes.docs import error_responses
from app.api.schemas import Token, TokenRequest, username_key

router = APIRouter(prefix=f"{API_PREFIX}/auth", tags=["auth"])


@router.post("/token", response_model=Token, responses=error_responses(401, 429))
def issue_token(credentials: TokenRequest, session: SessionDep, request: Request) -> Token:
    throttle: LoginThrottle = request.app.state.login_throttle
    # The peer, or the client the trusted edge names (main.py: settings.trusted_proxies).
    address = request.client.host if request.client else "unknown"
    try:
        with throttle.attempt(username_key(credentials.username), address) as attempt:
            user = crud.user_by_username(session, credentials.username)
            # verify_password always hashes, so unknown users take as long as wrong passwords.
            if not verify_password(credentials.password, user.password_hash if user else None):
                attempt.fail()
                raise HTTPException(
                    status_code=status.HTTP_401_UNAUTHORIZED,
                    detail="incorrect username or password",
                    headers={"WWW-Authenticate": "Bearer"},
                )
    except TooManyFailedLoginsError as error:
        raise HTTPException(
            status_code=status.HTTP_429_TOO_MANY_REQUESTS,
            detail=str(error),
            headers={"Retry-After": str(error.retry_after_s)},
        ) from error
    assert user is not None
    signer: TokenSigner = request.app.state.token_signer
    return Token(access_token=signer.issue(user.id, user.token_generation), expires_in=signer.ttl_s)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, responses=error_responses(401))
def log_out(user: CurrentUser, session: SessionDep) -> None:
    """Revokes every token issued to the caller so far, on every device."""
    crud.revoke_tokens(session, user)
