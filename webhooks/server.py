"""The receiver's HTTP protocol: uvicorn's h11 protocol plus a deadline on a request's headers.

uvicorn (0.54) has no header-read timeout: `--timeout-keep-alive` is armed only after a response,
and any byte received cancels it, so a client that opens a connection and sends nothing, or
trickles a request line and headers a byte at a time, holds the connection for ever. An ASGI app
cannot help (it is called once the headers are complete), so the limit lives in the protocol:
`uvicorn ... --http webhooks.server:ReceiverProtocol`.

h11 rather than httptools: h11 also bounds the size of the headers
(`--h11-max-incomplete-event-size`, 16 KiB by default); httptools buffers headers without limit.
The body is bounded by the app (webhooks/body.py: size and time).
"""

from __future__ import annotations

import asyncio
import os

from uvicorn.protocols.http.h11_impl import H11Protocol

DEFAULT_HEADER_TIMEOUT = 10.0


def header_timeout() -> float:
    """SOCIALNET_WEBHOOK_HEADER_TIMEOUT seconds (default 10): GitLab sends its headers at once."""
    return float(os.environ.get("SOCIALNET_WEBHOOK_HEADER_TIMEOUT") or DEFAULT_HEADER_TIMEOUT)


class ReceiverProtocol(H11Protocol):
    """Closes a connection whose request headers are not complete `header_timeout()` seconds after
    it opened, or after the first byte of a next request on a kept-alive connection."""

    _header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_deadline()

    def data_received(self, data: bytes) -> None:
        if self._between_requests():
            self._arm_header_deadline()  # the first bytes of a next request start its clock
        super().data_received(data)
        if not self._between_requests():
            self._cancel_header_deadline()  # the headers are in: the app takes it from here

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_deadline()
        super().connection_lost(exc)

    def _between_requests(self) -> bool:
        """No request whose headers were read is being answered."""
        return self.cycle is None or self.cycle.response_complete

    def _arm_header_deadline(self) -> None:
        if self._header_deadline is None:
            self._header_deadline = self.loop.call_later(header_timeout(), self._headers_too_slow)

    def _cancel_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if self._between_requests() and not self.transport.is_closing():
            self.transport.close()
