"""A load generator that is not the bottleneck: raw HTTP/1.1 keep-alive over asyncio
streams, requests prepared as bytes up front, N connections in one process (uvloop).

Measured against a bare ASGI app in the same run (the `bare` figure), so its own
ceiling is on the table next to every other number.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field


def build_request(path: str, body: bytes, headers: dict[str, str], host: str) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: keep-alive",
    ]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class Result:
    requests: int = 0
    calls: int = 0
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0

    @property
    def seconds(self) -> float:
        return max(self.finished - self.started, 1e-9)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def calls_per_second(self) -> float:
        return self.calls / self.seconds

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
            break
    if length:
        await reader.readexactly(length)
    return status


async def _connection(
    host: str,
    port: int,
    requests: Iterator[tuple[bytes, int]],
    result: Result,
    deadline: float | None,
    interval: float | None,
    start_at: float,
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    next_at = start_at
    try:
        for request, calls in requests:
            now = time.perf_counter()
            if deadline is not None and now > deadline:
                break
            if interval is not None:
                if next_at > now:
                    await asyncio.sleep(next_at - now)
                next_at += interval
            sent = time.perf_counter()
            writer.write(request)
            status = await _read_response(reader)
            result.latencies.append(time.perf_counter() - sent)
            result.statuses[status] = result.statuses.get(status, 0) + 1
            result.requests += 1
            if status == 200:
                result.calls += calls
            else:
                result.errors += 1
    finally:
        writer.close()


def _shared(items: Sequence[tuple[bytes, int]], repeat: bool) -> Iterator[tuple[bytes, int]]:
    return itertools.cycle(items) if repeat else iter(items)


async def run(
    host: str,
    port: int,
    items: Sequence[tuple[bytes, int]],
    connections: int,
    duration: float | None = None,
    rate: float | None = None,
) -> Result:
    """Send `items` (request bytes, calls in it) over `connections` keep-alive connections.

    With `duration`, cycle through the items until time is up; otherwise send each once.
    With `rate` (requests/s in total), pace the connections to that rate (open loop per
    connection) for latency at a given load.
    """
    source = _shared(items, repeat=duration is not None)
    result = Result()
    result.started = time.perf_counter()
    deadline = result.started + duration if duration is not None else None
    interval = connections / rate if rate else None
    await asyncio.gather(
        *(
            _connection(
                host,
                port,
                source,
                result,
                deadline,
                interval,
                result.started + (i * interval / connections if interval else 0),
            )
            for i in range(connections)
        )
    )
    result.finished = time.perf_counter()
    return result


def run_sync(*args: object, **kwargs: object) -> Result:
    try:
        import uvloop

        return uvloop.run(run(*args, **kwargs))  # type: ignore[arg-type]
    except ImportError:  # pragma: no cover
        return asyncio.run(run(*args, **kwargs))  # type: ignore[arg-type]
