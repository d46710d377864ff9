"""The shared secret GitLab sends as `X-Gitlab-Token`.

Today it is read from the 0600 file named by `SOCIALNET_WEBHOOK_TOKEN_FILE`; the Vault work plugs in
behind `webhook_token()`. The file is re-read when it changes, so a rotation needs no restart. The
value never reaches a log line or an error message.
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path

from socialnet_ops.adapters.gitlab import read_secret_file

TOKEN_FILE_VARIABLE = "SOCIALNET_WEBHOOK_TOKEN_FILE"  # noqa: S105 - a variable name, not a secret


class TokenSource:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._token = b""

    def current(self) -> bytes:
        info = self.path.stat()
        stamp = (info.st_mtime_ns, info.st_size)
        if stamp != self._stamp:
            self._token = read_secret_file(self.path, TOKEN_FILE_VARIABLE).encode()
            self._stamp = stamp
        return self._token

    def matches(self, supplied: str | None) -> bool:
        """Constant-time comparison; a missing header never matches."""
        if supplied is None:
            return False
        return hmac.compare_digest(supplied.encode(), self.current())


def webhook_token_source() -> TokenSource:
    """Where the receiver's token comes from (the seam for Vault)."""
    path = os.environ.get(TOKEN_FILE_VARIABLE)
    if not path:
        raise RuntimeError(
            f"{TOKEN_FILE_VARIABLE} is not set: point it at a 0600 file holding the secret token "
            "configured on the GitLab webhook"
        )
    source = TokenSource(Path(path))
    source.current()  # fail at start, not at the first delivery
    return source
