"""The bounded HTTP server on real sockets: header deadline and size, the connection cap,
shutdown, and bodies read under a deadline that grows with their length."""

from __future__ import annotations

import hashlib
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from watcher.httpserver import BoundedHandler, BoundedHTTPServer


class _Echo(BoundedHandler):
    """GET answers "ok"; POST answers the length and digest of the body it read."""

    body_grace = 0.5
    body_min_rate = 1000  # bytes per second
    body_max_seconds = 3.0

    def do_GET(self) -> None:  # noqa: N802
        self._send(b"ok\n")

    def do_POST(self) -> None:  # noqa: N802
        body = self.read_body(max_bytes=4096)
        self._send(f"{len(body)} {hashlib.sha256(body).hexdigest()}\n".encode())

    def _send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def serve() -> Iterator[Callable[..., BoundedHTTPServer]]:
    servers: list[BoundedHTTPServer] = []

    def start(**bounds: Any) -> BoundedHTTPServer:
        server = BoundedHTTPServer(("127.0.0.1", 0), _Echo, **bounds)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _connect(server: BoundedHTTPServer) -> socket.socket:
    return socket.create_connection(server.server_address, timeout=5)


def _answer(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


def _post(server: BoundedHTTPServer, body: bytes, pieces: int = 1,
          pause: float = 0.0) -> tuple[bytes, float]:
    """POST ``body`` in ``pieces`` sends ``pause`` s apart, stopping when the server answers;
    the answer, and the seconds from the first send to the answer."""
    with _connect(server) as sock:
        started = time.monotonic()
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body))
        step = -(-len(body) // pieces)
        for start in range(0, len(body), step):
            if select.select([sock], [], [], pause)[0]:
                break  # answered early: the server gave up on this body
            sock.sendall(body[start:start + step])
        else:
            select.select([sock], [], [], 5)
        return _answer(sock), time.monotonic() - started


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def test_a_body_is_read_whole_whether_it_comes_with_the_headers_or_after(
        serve: Callable[..., BoundedHTTPServer]) -> None:
    server = serve()
    body = bytes(range(256)) * 12
    expected = f"{len(body)} {hashlib.sha256(body).hexdigest()}\n".encode()
    with _connect(server) as sock:  # one send: the selector reads part of the body too
        sock.sendall(b"POST / HTTP/1.0\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        assert _answer(sock).endswith(b"\r\n\r\n" + expected)
    answer, _ = _post(server, body, pieces=3, pause=0.1)
    assert _status(answer) == 200 and answer.endswith(expected)


def test_a_slow_steady_upload_passes_and_a_trickle_is_cut_once_behind_the_rate(
        serve: Callable[..., BoundedHTTPServer]) -> None:
    server = serve()
    # 0.5 s for the first bytes, then a second more per 1000 bytes, 3 s at most
    answer, _ = _post(server, b"x" * 2000, pieces=20, pause=0.05)  # 2000 B/s
    assert _status(answer) == 200 and b"\r\n\r\n2000 " in answer
    # 10 bytes every 0.4 s: each read is quick, the rate is not; declaring 2000 buys nothing
    answer, seconds = _post(server, b"x" * 2000, pieces=200, pause=0.4)
    assert _status(answer) == 408 and 0.5 < seconds < 1.5, (answer[:40], seconds)
    assert answer.startswith(b"HTTP/1.0 408 Request Timeout\r\n") and b"too slow" in answer
    # above the rate but too long: 4000 bytes at 1250 B/s would take 3.2 s, the cap is 3
    answer, seconds = _post(server, b"x" * 4000, pieces=40, pause=0.08)
    assert _status(answer) == 408 and 2.8 < seconds < 3.6, (answer[:40], seconds)


@pytest.mark.parametrize(("headers", "status"), [
    (b"", 411),
    (b"Transfer-Encoding: chunked\r\n", 411),
    (b"Content-Length: 4097\r\n", 413),
    (b"Content-Length: -1\r\n", 400),
])
def test_bodies_that_are_not_read(serve: Callable[..., BoundedHTTPServer], headers: bytes,
                                  status: int) -> None:
    with _connect(serve()) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\n" + headers + b"\r\n")
        assert _status(_answer(sock)) == status


def test_a_body_cut_short_is_a_bad_request(serve: Callable[..., BoundedHTTPServer]) -> None:
    with _connect(serve()) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\nonly this")
        sock.shutdown(socket.SHUT_WR)
        assert _status(_answer(sock)) == 400


def test_headers_have_a_size_limit(serve: Callable[..., BoundedHTTPServer]) -> None:
    with _connect(serve()) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n" + b"X-Big: " + b"a" * 20_000)
        assert _status(_answer(sock)) == 431


def test_at_the_connection_cap_the_longest_waiting_connection_goes(
        serve: Callable[..., BoundedHTTPServer]) -> None:
    server = serve(max_pending=4)
    silent = []
    for _ in range(6):
        silent.append(_connect(server))
        time.sleep(0.05)  # accepted in this order
    try:
        with _connect(server) as sock:  # the newest: served, one more silent one dropped
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
            assert _answer(sock).endswith(b"\r\n\r\nok\n")
        for sock in silent[:3]:
            assert _status(_answer(sock)) == 503
        for sock in silent[3:]:
            sock.settimeout(0.2)
            with pytest.raises(TimeoutError):  # still waiting for headers
                sock.recv(1)
    finally:
        for sock in silent:
            sock.close()


def test_shutdown_closes_the_connections_still_sending_headers(
        serve: Callable[..., BoundedHTTPServer]) -> None:
    server = BoundedHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    with _connect(server) as sock:
        sock.sendall(b"GET / HT")
        time.sleep(0.1)
        server.shutdown()
        assert _answer(sock) == b""
    server.server_close()
    thread.join(1)
    assert not thread.is_alive()


def test_a_flood_past_the_connection_cap_never_stops_the_server(
        serve: Callable[..., BoundedHTTPServer]) -> None:
    """Connections dropped at the cap while their own bytes are in the same wake-up of the
    selector (a new-user trial: 600 slow clients killed the server's thread for good)."""
    server = serve(max_pending=4)
    flood: list[socket.socket] = []
    try:
        for _round in range(10):
            for _ in range(30):  # each sends a byte at once: readable when the next is accepted
                sock = _connect(server)
                sock.sendall(b"G")
                flood.append(sock)
            for sock in flood[-30:]:
                try:
                    sock.sendall(b"E")
                except OSError:
                    pass  # dropped already: that is the point
        with _connect(server) as sock:
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
            assert _answer(sock).endswith(b"\r\n\r\nok\n"), "the server stopped serving"
    finally:
        for sock in flood:
            sock.close()
