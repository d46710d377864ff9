"""Where an address points: this machine or elsewhere (plain HTTP and emulator credentials are
only ever used for this machine)."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


def is_loopback(address: str | None) -> bool:
    """True for a URL or `host[:port]` on this machine (localhost, 127.0.0.0/8, ::1)."""
    text = address or ""
    host = urlsplit(text if "//" in text else f"//{text}").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
