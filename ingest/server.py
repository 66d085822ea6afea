"""HTTP limits uvicorn does not have: a header read timeout, a header size limit, a body
read timeout, and JSON answers for them and for framing errors.

Checked in uvicorn 0.54's source (protocols/http/httptools_impl.py): its only timer is
the keep-alive one, armed after a response; a connection that never finishes its headers,
or its body, is held for ever (issue #13: 900 slow connections held 60 s, none closed; a
request with a lying `Content-Length` held without an answer). `h11_max_incomplete_event_size`
bounds headers only with the slower h11 parser, and httptools has no limit at all (a 64 MB
header was answered `200`). Its own framing errors are answered in plain text.

So the receiver runs uvicorn's httptools protocol with three additions, none of them
costing a timer per request: each connection records the phase of its current request and
when that phase must end (a float set in the parser callbacks), and one sweep per server,
a few times a second, closes the connections past their deadline:
- headers (from the connection's first byte or the request's first byte) within
  `KOALA_HEADER_TIMEOUT_SECONDS`, at most `KOALA_MAX_HEADER_BYTES` (request line and
  headers): `408 header_timeout` / `431 headers_too_large`;
- the body within `KOALA_BODY_TIMEOUT_SECONDS` of the headers: `408 body_timeout` (the
  app's `receive` then says the client went away, and its answer is dropped);
- an unparsable request: `400 invalid_http`.
The number of open connections is uvicorn's `limit_concurrency` (`KOALA_MAX_CONNECTIONS`),
idle keep-alive connections close after `KOALA_KEEP_ALIVE_SECONDS`.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ingest.config import Settings

# phases of the current request on a connection (BODY: until the body is whole)
IDLE, HEADERS, BODY = 0, 1, 2

STATUS_TEXT = {
    400: b"Bad Request",
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
}


class HeadersTooLarge(Exception):
    """The request's headers passed KOALA_MAX_HEADER_BYTES: answered 431."""


def answer(status: int, code: str, message: str) -> bytes:
    """A whole HTTP/1.1 answer that closes the connection, in the app's `{code, message}`."""
    body = orjson.dumps({"code": code, "message": message})
    return b"".join(
        [
            b"HTTP/1.1 %d %s\r\n" % (status, STATUS_TEXT[status]),
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
            body,
        ]
    )


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header/body deadlines and a header size limit.

    Two methods more than uvicorn's per request (`data_received` replaced, one call in
    `on_headers_complete`): every Python-level callback costs the hot path instructions
    (bench/README.md), so the phase of a request is read off uvicorn's own cycle state
    in the sweep rather than tracked in more callbacks.
    """

    header_timeout = 10.0
    body_timeout = 30.0
    max_header_bytes = 32 * 1024
    _sweeping: ClassVar[set[int]] = set()  # ids of the loops a sweep runs on

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.phase = IDLE
        self.deadline = 0.0
        self.pending_bytes = 0
        self.received_any = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # a connection that never sends a byte is held no longer than one that trickles
        self.phase = HEADERS
        self.deadline = self.loop.time() + self.header_timeout
        if id(self.loop) not in self._sweeping:
            self._sweeping.add(id(self.loop))
            self.loop.call_later(self._interval(), self._sweep)

    @classmethod
    def _interval(cls) -> float:
        return min(1.0, cls.header_timeout / 4, cls.body_timeout / 4)

    def _sweep(self) -> None:
        """Close every connection of this server past its phase's deadline."""
        now = self.loop.time()
        for conn in list(self.connections):
            if isinstance(conn, GuardedProtocol) and conn.phase and now > conn.deadline:
                conn.expire()
        self.loop.call_later(self._interval(), self._sweep)

    def expire(self) -> None:
        cycle = self.cycle
        if self.transport.is_closing():
            return
        if self.phase == HEADERS:
            if self.received_any:
                self.transport.write(
                    answer(
                        408,
                        "header_timeout",
                        f"the request headers did not arrive within {self.header_timeout:g} s",
                    )
                )
            self.transport.close()
        elif cycle is not None and cycle.more_body and not cycle.response_complete:
            if not cycle.response_started:
                self.transport.write(
                    answer(
                        408,
                        "body_timeout",
                        f"the request body did not arrive within {self.body_timeout:g} s",
                    )
                )
            # the app's receive() now says the client went away; its answer is dropped
            cycle.disconnected = True
            cycle.message_event.set()
            self.transport.close()
        self.phase = IDLE  # the body came whole, or the answer went: no deadline

    def data_received(self, data: bytes) -> None:
        """uvicorn's, with the header phase and size counted, and JSON errors."""
        self.received_any = True
        if self.phase != HEADERS:
            cycle = self.cycle
            if cycle is None or cycle.response_complete:  # the next request begins
                self.phase = HEADERS
                self.deadline = self.loop.time() + self.header_timeout
                self.pending_bytes = 0
        if self.phase == HEADERS:
            # httptools hands a header over only once it is whole, holding it until then:
            # the bytes of an unfinished one are counted as they come
            self.pending_bytes += len(data)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            super().data_received(b"")  # uvicorn's own handling (no websockets here)
        except httptools.HttpParserError as error:
            if isinstance(error.__context__, HeadersTooLarge):
                self._close_with(
                    431,
                    "headers_too_large",
                    f"the request line and headers are over {self.max_header_bytes} bytes",
                )
            else:
                self._close_with(400, "invalid_http", f"not a valid HTTP/1.1 request: {error}")
            return
        if self.phase == HEADERS and self.pending_bytes > self.max_header_bytes:
            self._close_with(
                431,
                "headers_too_large",
                f"the request line and headers are over {self.max_header_bytes} bytes",
            )

    def _close_with(self, status: int, code: str, message: str) -> None:
        self.phase = IDLE
        if self.cycle is None or not self.cycle.response_started:
            self.transport.write(answer(status, code, message))
        self.transport.close()

    def on_headers_complete(self) -> None:
        if self.pending_bytes > self.max_header_bytes:
            # the chunk counted may hold body bytes too: the exact size decides
            size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
            if size > self.max_header_bytes:
                raise HeadersTooLarge
        self.phase = BODY
        self.deadline = self.loop.time() + self.body_timeout
        super().on_headers_complete()


def protocol_for(settings: Settings) -> type[GuardedProtocol]:
    """The protocol class with this process's limits."""
    return type(
        "GuardedProtocol",
        (GuardedProtocol,),
        {
            "header_timeout": settings.header_timeout_seconds,
            "body_timeout": settings.body_timeout_seconds,
            "max_header_bytes": settings.max_header_bytes,
            "_sweeping": set(),
        },
    )
