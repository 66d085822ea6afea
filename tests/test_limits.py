"""HTTP limits of the receiver (ingest/server.py) on a real `koala-ingest web`: slow, greedy
and malformed clients get a JSON `{code, message}` answer or a closed connection, within
the configured time, and never stop a real SDK's calls from being answered."""

from __future__ import annotations

import base64
import contextlib
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlparse

import httpx
import orjson
import pytest
from conftest import Receiver, Servers, start_receiver

from ingest.store.projects import Project

pytestmark = pytest.mark.slow

TIMEOUT = 1.5  # the receiver's header and body timeouts in these tests, seconds


@pytest.fixture(scope="module")
def rx(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    started = start_receiver(
        servers,
        tmp_path_factory.mktemp("limits"),
        KOALA_QUEUE_NAME=f"limits-{secrets.token_hex(3)}",  # nobody consumes it
        KOALA_HEADER_TIMEOUT_SECONDS=str(TIMEOUT),
        KOALA_BODY_TIMEOUT_SECONDS=str(TIMEOUT),
        KOALA_MAX_HEADER_BYTES="8192",
    )
    yield started
    started.proc.stop()


def connect(rx: Receiver) -> socket.socket:
    url = urlparse(rx.url)
    return socket.create_connection((url.hostname, url.port), timeout=10)


def exchange(rx: Receiver, data: bytes, wait: float = 10) -> tuple[bytes, float]:
    """Send `data`, read until the server closes; the answer and the seconds it took."""
    sock = connect(rx)
    started = time.monotonic()
    try:
        sock.sendall(data)
        sock.settimeout(wait)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
    except (ConnectionResetError, BrokenPipeError):
        pass
    finally:
        sock.close()
    return out, time.monotonic() - started


def status_and_json(raw: bytes) -> tuple[int, dict[str, str]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), orjson.loads(body)


def test_a_header_over_the_limit_is_431_not_read_to_its_end(rx: Receiver) -> None:
    """A 64 MB header was answered 200 (issue #13): httptools has no limit of its own."""
    sock = connect(rx)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
    sent = 0
    try:
        while sent < 64 * 1024 * 1024:
            sock.sendall(b"a" * 65536)
            sent += 65536
    except (ConnectionResetError, BrokenPipeError):
        pass
    sock.settimeout(10)
    raw = b""
    try:
        while chunk := sock.recv(65536):
            raw += chunk
    except ConnectionResetError:
        pass
    sock.close()
    assert sent < 64 * 1024 * 1024  # refused long before the end
    if raw:  # the answer can be lost to the reset of a client still writing
        status, body = status_and_json(raw)
        assert (status, body["code"]) == (431, "headers_too_large")


def test_headers_just_over_the_limit_get_a_431_answer(rx: Receiver) -> None:
    raw, _ = exchange(
        rx, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n"
    )
    status, body = status_and_json(raw)
    assert (status, body["code"]) == (431, "headers_too_large")


def test_headers_that_never_end_get_a_408_within_the_header_timeout(rx: Receiver) -> None:
    raw, took = exchange(rx, b"POST /v1/track HTTP/1.1\r\nHost: x\r\nX-Slow: a")
    status, body = status_and_json(raw)
    assert (status, body["code"]) == (408, "header_timeout")
    assert TIMEOUT <= took < TIMEOUT + 3


def test_a_lying_content_length_gets_a_408_within_the_body_timeout(
    rx: Receiver, project: Project
) -> None:
    """A request whose body is shorter than its Content-Length was held without an answer."""
    key = base64.b64encode(f"{project.public_key}:".encode())
    raw, took = exchange(
        rx,
        b"POST /v1/track HTTP/1.1\r\nHost: x\r\nAuthorization: Basic " + key + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: 500\r\n\r\n"
        b'{"userId": "u", "event": "E"}',
    )
    status, body = status_and_json(raw)
    assert (status, body["code"]) == (408, "body_timeout")
    assert TIMEOUT <= took < TIMEOUT + 3


def test_an_idle_connection_is_closed_without_an_answer(rx: Receiver) -> None:
    raw, took = exchange(rx, b"")
    assert raw == b""
    assert took < TIMEOUT + 3


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"POST /v1/track HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"POST /v1/track HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET /healthz HTTP/1.1\r\nHo\x00st: x\r\n\r\n",
    ],
)
def test_a_framing_error_is_a_400_in_json(rx: Receiver, request_bytes: bytes) -> None:
    raw, _ = exchange(rx, request_bytes)
    status, body = status_and_json(raw)
    assert (status, body["code"]) == (400, "invalid_http")
    assert body["message"]


def test_500_slow_clients_do_not_stop_sdk_calls_being_answered(
    rx: Receiver, project: Project
) -> None:
    """Slowloris: 500 connections, half idle and half trickling a header byte every 0.3 s,
    while a real client sends track calls: every call is answered promptly, and the slow
    connections are all closed by the header timeout."""
    socks: list[socket.socket] = []
    for _ in range(500):
        sock = connect(rx)
        socks.append(sock)
    for sock in socks[::2]:
        sock.sendall(b"POST /v1/track HTTP/1.1\r\nHost: x\r\n")
    stop = threading.Event()

    def trickle() -> None:
        while not stop.is_set():
            for sock in socks[::2]:
                with contextlib.suppress(OSError):
                    sock.sendall(b"X")
            time.sleep(0.3)

    trickler = threading.Thread(target=trickle)
    trickler.start()
    try:
        latencies = []
        with httpx.Client(auth=(project.public_key, "")) as client:
            for i in range(50):
                started = time.monotonic()
                answer = client.post(
                    rx.url + "/v1/track", json={"userId": "u", "event": "E", "messageId": f"s{i}"}
                )
                latencies.append(time.monotonic() - started)
                assert answer.status_code == 200, answer.text
        latencies.sort()
        assert latencies[-1] < 1.0, latencies[-5:]  # the slow clients never queue them
        closed = 0
        deadline = time.monotonic() + TIMEOUT + 5
        for sock in socks:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                while sock.recv(65536):
                    pass
                closed += 1
            except ConnectionResetError:
                closed += 1
            except TimeoutError:
                pass
        assert closed == 500
    finally:
        stop.set()
        trickler.join()
        for sock in socks:
            sock.close()
    assert rx.proc.alive()


def test_the_next_request_on_a_keep_alive_connection_has_the_same_header_timeout(
    rx: Receiver,
) -> None:
    sock = connect(rx)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    first = sock.recv(65536)
    assert first.startswith(b"HTTP/1.1 200")
    started = time.monotonic()
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: a")
    raw = b""
    while chunk := sock.recv(65536):
        raw += chunk
    sock.close()
    status, body = status_and_json(raw)
    assert (status, body["code"]) == (408, "header_timeout")
    assert time.monotonic() - started < TIMEOUT + 3


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/nowhere", 404, "not_found"),
        ("GET", "/v1/batch", 405, "method_not_allowed"),
        ("DELETE", "/healthz", 405, "method_not_allowed"),
    ],
)
def test_an_unknown_path_or_method_is_answered_in_json(
    rx: Receiver, method: str, path: str, status: int, code: str
) -> None:
    answer = httpx.request(method, rx.url + path)
    assert (answer.status_code, answer.json()["code"]) == (status, code)
    assert answer.json()["message"]
