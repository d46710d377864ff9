"""Opaque keyset cursors over (created_at, id): newest first, stable under concurrent inserts."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime

from app.api.core.security import MAX_ID

_MAX_ENCODED_LENGTH = 128


@dataclass(frozen=True)
class Cursor:
    created_at: datetime
    id: int

    def encode(self) -> str:
        raw = f"{self.created_at.isoformat()}|{self.id}".encode("ascii")
        return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Cursor:
        """Raises ValueError with a client-facing reason for anything not made by encode()."""
        if len(token) > _MAX_ENCODED_LENGTH or not token.isascii():
            raise ValueError("malformed cursor")
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
            created_at_text, id_text = raw.split("|")
            created_at = datetime.fromisoformat(created_at_text)
        except (binascii.Error, UnicodeDecodeError, ValueError) as error:
            raise ValueError("malformed cursor") from error
        if created_at.tzinfo is None:
            raise ValueError("malformed cursor")
        if not (id_text.isdecimal() and 0 < int(id_text) <= MAX_ID):
            raise ValueError("malformed cursor")
        return cls(created_at=created_at, id=int(id_text))
