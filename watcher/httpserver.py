"""An HTTP server that slow clients cannot starve, for the standard library's request handlers.

Why not ``ThreadingHTTPServer`` with a socket timeout: the timeout bounds each read, not the
request, so a client sending one header byte every few seconds keeps a thread and a slot for as
long as it likes. Eight of them made /livez answer 503 "busy" until Kubernetes restarted a
healthy pod (issue 9). The guarantees here, and why each is shaped so:

- **Headers cost no thread and no slot.** One selector thread reads the request line and headers
  of every connection at once, so a waiting connection costs a buffer and a descriptor; a thread
  each would put the cap on slow clients back at a few dozen. Each connection has one deadline for
  its whole request line and headers (``HEADER_DEADLINE`` from accept, however its bytes trickle;
  408 past it) and at most ``HEADER_MAX_BYTES`` of them (431).
- **A flood of connections drops the oldest.** At ``MAX_PENDING`` waiting connections the one that
  has waited longest is closed. A probe sends its whole request at once, so it is always among
  the newest and is answered; refusing new connections instead would refuse the probe.
- **Probes have slots of their own.** Only a complete request takes a slot and a handler thread.
  Paths named in ``reserved_paths`` (the probes) take one of ``reserved_slots`` first and share the
  others, so no other route (the shop's page, its uploads) can take the last slot from them. With
  no slot free the answer is 503 at once: a queue would only turn load into timeouts.
- **A body must keep a minimum rate.** ``BoundedHandler.read_body`` gives ``BODY_GRACE`` for the
  first bytes and one second more for every ``BODY_MIN_RATE`` bytes received (Apache's
  ``mod_reqtimeout`` ``MinRate``), never more than ``BODY_MAX_SECONDS`` in all: a 10 MiB photo on
  a 1 Mbit/s line passes, a trickle loses its slot within ``BODY_GRACE`` of falling behind, and
  declaring a large body buys nothing. A fixed timeout per read would let a trickle go on.
- **One request per connection** (HTTP/1.0, ``Connection: close``): a kept-alive connection would
  wait for its next headers in a handler thread, outside the selector and its deadline.

Where it is weaker: writing the answer is bounded per ``sendall`` by ``WRITE_TIMEOUT``, so a
client that never reads keeps its slot that long (the operations answers fit in the socket
buffers and do not wait); and many fast, complete probe requests are a rate problem, not a slow
one: they can fill the probe slots, as they would any server's.
"""

from __future__ import annotations

import io
import re
import selectors
import socket
import threading
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

from loguru import logger

HEADER_DEADLINE = 5.0  # seconds from accept to the end of the headers
HEADER_MAX_BYTES = 16 * 1024
MAX_PENDING = 256  # connections still sending their headers
MAX_CONCURRENT = 8  # requests in handlers, reserved slots apart
RESERVED_SLOTS = 4
WRITE_TIMEOUT = 5.0
BODY_GRACE = 5.0
BODY_MIN_RATE = 100 * 1024  # bytes per second: 0.8 Mbit/s
BODY_MAX_SECONDS = 120.0  # 10 MiB at the minimum rate takes 102 s
LINGER_SECONDS = 1.0
_END_OF_HEADERS = re.compile(rb"\r?\n\r?\n")
_BUSY = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
         b"Content-Length: 5\r\nRetry-After: 1\r\nConnection: close\r\n\r\nbusy\n")


def _plain(status: HTTPStatus) -> bytes:
    body = f"{status.phrase.lower()}\n".encode()
    return (f"HTTP/1.0 {status.value} {status.phrase}\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


_TIMEOUT = _plain(HTTPStatus.REQUEST_TIMEOUT)
_TOO_LARGE = _plain(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)


class RequestError(Exception):
    """A request the handler refuses with ``status`` (its body cannot or may not be read)."""

    def __init__(self, status: HTTPStatus, detail: str) -> None:
        super().__init__(f"{status.value} {detail}")
        self.status = status
        self.detail = detail


class _Replay(io.RawIOBase):
    """The bytes the selector already read, then the socket."""

    def __init__(self, head: bytes, sock: socket.socket) -> None:
        self._head = memoryview(head)
        self._sock = sock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._head:
            count = min(len(buffer), len(self._head))
            buffer[:count] = self._head[:count]
            self._head = self._head[count:]
            return count
        return self._sock.recv_into(buffer)


class BoundedHandler(BaseHTTPRequestHandler):
    """A request handler served by ``BoundedHTTPServer``: its request line and headers are already
    read; a handler that takes a body reads it with ``read_body``."""

    server: BoundedHTTPServer
    timeout = WRITE_TIMEOUT  # applied to the socket by StreamRequestHandler.setup
    body_grace = BODY_GRACE
    body_min_rate = BODY_MIN_RATE
    body_max_seconds = BODY_MAX_SECONDS

    def __init__(self, sock: socket.socket, address: Any, server: BoundedHTTPServer,
                 head: bytes) -> None:
        self._head = head
        super().__init__(sock, address, server)

    def setup(self) -> None:
        super().setup()
        self.rfile.close()
        self.rfile = io.BufferedReader(_Replay(self._head, self.connection))

    def handle(self) -> None:
        self.close_connection = True
        try:
            self.handle_one_request()
        except RequestError as exc:
            self.connection.settimeout(self.timeout)
            self.send_error(exc.status, explain=exc.detail)
            self._discard_rest()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the stdlib's name)
        logger.debug("http {} {}", self.address_string(), format % args)

    def read_body(self, max_bytes: int) -> bytes:
        """The request's body, at most ``max_bytes``, read under its deadline.

        Raises ``RequestError``: 411 without a Content-Length (chunked bodies are not taken),
        400 for a bad one or a body cut short, 413 beyond ``max_bytes``, 408 past the deadline.
        The handler answers a ``RequestError`` it lets through with its status.
        """
        return b"".join(self.body_chunks(max_bytes))

    def body_chunks(self, max_bytes: int, chunk_size: int = 64 * 1024) -> Iterator[bytes]:
        """``read_body`` as it arrives, for bodies not to be held in memory (uploads); the same
        deadline and the same errors, raised from the iteration."""
        length = self._content_length(max_bytes)
        started = time.monotonic()
        got = 0
        try:
            while got < length:
                deadline = started + min(self.body_grace + got / self.body_min_rate,
                                         self.body_max_seconds)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                self.connection.settimeout(remaining)
                chunk = self.rfile.read1(min(length - got, chunk_size))
                if not chunk:
                    raise RequestError(HTTPStatus.BAD_REQUEST, "body cut short")
                got += len(chunk)
                yield chunk
        except TimeoutError:
            raise RequestError(HTTPStatus.REQUEST_TIMEOUT, f"{got} of {length} bytes of body in "
                               f"{time.monotonic() - started:.0f} s: too slow") from None
        finally:
            self.connection.settimeout(self.timeout)

    def _discard_rest(self) -> None:
        """Read what the client still sends, for a moment: closing on unread bytes resets the
        connection, and the client may lose the answer before it reads it."""
        end = time.monotonic() + LINGER_SECONDS
        try:
            self.connection.shutdown(socket.SHUT_WR)
            while (left := end - time.monotonic()) > 0:
                self.connection.settimeout(left)
                if not self.connection.recv(64 * 1024):
                    return
        except OSError:
            pass

    def _content_length(self, max_bytes: int) -> int:
        if "Transfer-Encoding" in self.headers or "Content-Length" not in self.headers:
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "a Content-Length is required")
        value = self.headers["Content-Length"].strip()
        if not value.isdigit():
            raise RequestError(HTTPStatus.BAD_REQUEST, f"Content-Length {value!r}")
        if int(value) > max_bytes:
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                               f"the body may have at most {max_bytes} bytes")
        return int(value)


@dataclass
class _Pending:
    """A connection still sending its request line and headers."""

    sock: socket.socket
    address: Any
    deadline: float
    data: bytearray = field(default_factory=bytearray)


class BoundedHTTPServer:
    """Serves ``handler`` on ``address`` within the bounds of the module docstring.

    ``serve_forever()`` runs the selector in the caller's thread until ``shutdown()``;
    ``server_close()`` then releases the listening socket.
    """

    def __init__(self, address: tuple[str, int], handler: type[BoundedHandler], *,
                 max_concurrent: int = MAX_CONCURRENT, reserved_paths: Collection[str] = (),
                 reserved_slots: int = RESERVED_SLOTS, header_deadline: float = HEADER_DEADLINE,
                 max_pending: int = MAX_PENDING) -> None:
        self.handler = handler
        self.reserved_paths = frozenset(reserved_paths)
        self.header_deadline = header_deadline
        self.max_pending = max_pending
        self._shared = threading.BoundedSemaphore(max_concurrent)
        self._reserved = threading.BoundedSemaphore(reserved_slots) if reserved_slots else None
        self._pending: dict[socket.socket, _Pending] = {}  # oldest first: deadlines in order
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self.socket = _listen(address)
        self.server_address: tuple[str, int] = self.socket.getsockname()[:2]
        self._wake_r, self._wake_w = socket.socketpair()  # shutdown() wakes the selector

    def serve_forever(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self.socket, selectors.EVENT_READ)
        selector.register(self._wake_r, selectors.EVENT_READ)
        try:
            while not self._stop.is_set():
                for key, _ in selector.select(self._wait()):
                    try:
                        self._event(selector, key)
                    except Exception:  # this thread serves the probes: it must never end
                        logger.exception("HTTP server: error on one connection; going on")
                self._expire(selector)
        finally:
            for pending in list(self._pending.values()):
                self._drop(selector, pending)
            selector.close()
            self._stopped.set()

    def _event(self, selector: selectors.BaseSelector, key: selectors.SelectorKey) -> None:
        if key.fileobj is self.socket:
            self._accept(selector)
        elif key.fileobj is self._wake_r:
            self._wake_r.recv(64)
        elif self._pending.get(key.fileobj) is key.data:  # type: ignore[call-overload]
            # not dropped at the cap by an accept earlier in this same wake-up
            self._read(selector, key.data)

    def shutdown(self) -> None:
        """Stop ``serve_forever`` and wait for it; requests in handlers finish on their own."""
        self._stop.set()
        self._wake_w.send(b"x")
        self._stopped.wait()

    def server_close(self) -> None:
        for sock in (self.socket, self._wake_r, self._wake_w):
            sock.close()

    # -- the selector's thread: it never blocks on a client ---------------------------------------

    def _wait(self) -> float | None:
        if not self._pending:
            return None
        oldest = next(iter(self._pending.values()))
        return max(0.0, oldest.deadline - time.monotonic())

    def _accept(self, selector: selectors.BaseSelector) -> None:
        for _ in range(64):  # then look at the others again
            try:
                sock, address = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors: the waiting ones are closed by deadline
                logger.warning("HTTP accept failed: {}", exc)
                return
            if len(self._pending) >= self.max_pending:
                oldest = next(iter(self._pending.values()))
                logger.debug("HTTP {} dropped: {} connections wait for their headers",
                             oldest.address, self.max_pending)
                self._drop(selector, oldest, _BUSY)
            sock.setblocking(False)
            pending = _Pending(sock, address, time.monotonic() + self.header_deadline)
            self._pending[sock] = pending
            selector.register(sock, selectors.EVENT_READ, pending)

    def _read(self, selector: selectors.BaseSelector, pending: _Pending) -> None:
        try:
            chunk = pending.sock.recv(HEADER_MAX_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:  # the client left
            self._drop(selector, pending)
            return
        seen = len(pending.data)
        pending.data += chunk
        end = _END_OF_HEADERS.search(pending.data, max(0, seen - 3))  # only where it can be new
        if end is not None and end.end() <= HEADER_MAX_BYTES:
            self._unregister(selector, pending)
            self._dispatch(pending)
        elif end is not None or len(pending.data) > HEADER_MAX_BYTES:
            self._drop(selector, pending, _TOO_LARGE)

    def _expire(self, selector: selectors.BaseSelector) -> None:
        now = time.monotonic()
        while self._pending:
            oldest = next(iter(self._pending.values()))
            if oldest.deadline > now:
                return
            logger.debug("HTTP {} sent no complete headers in {} s", oldest.address,
                         self.header_deadline)
            self._drop(selector, oldest, _TIMEOUT)

    def _dispatch(self, pending: _Pending) -> None:
        slot = self._slot(_path(pending.data))
        if slot is None:
            _close(pending.sock, _BUSY)
            return
        pending.sock.setblocking(True)
        try:
            threading.Thread(target=self._handle, args=(pending, slot), name="http-request",
                             daemon=True).start()
        except RuntimeError as exc:  # no thread to be had: the client may try again
            logger.warning("HTTP request from {} refused: {}", pending.address, exc)
            slot.release()
            _close(pending.sock, _BUSY)

    def _slot(self, path: str) -> threading.BoundedSemaphore | None:
        if path in self.reserved_paths and self._reserved and self._reserved.acquire(False):
            return self._reserved
        return self._shared if self._shared.acquire(blocking=False) else None

    def _unregister(self, selector: selectors.BaseSelector, pending: _Pending) -> None:
        del self._pending[pending.sock]
        selector.unregister(pending.sock)

    def _drop(self, selector: selectors.BaseSelector, pending: _Pending,
              answer: bytes = b"") -> None:
        self._unregister(selector, pending)
        try:  # bytes left unread at close would reset the connection before the answer is read
            pending.sock.recv(HEADER_MAX_BYTES)
        except OSError:
            pass
        _close(pending.sock, answer)

    # -- a handler's thread ------------------------------------------------------------------------

    def _handle(self, pending: _Pending, slot: threading.BoundedSemaphore) -> None:
        try:
            self.handler(pending.sock, pending.address, self, bytes(pending.data))
        except OSError as exc:  # the client left or stopped reading: nothing to answer
            logger.debug("HTTP {} gone: {}", pending.address, exc)
        except Exception:  # one request's failure never takes the server down
            logger.exception("HTTP request from {} failed", pending.address)
        finally:
            slot.release()
            _close(pending.sock)


def _listen(address: tuple[str, int]) -> socket.socket:
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _path(head: bytes) -> str:
    words = head.split(b"\n", 1)[0].split()
    return urlsplit(words[1].decode("latin-1")).path if len(words) >= 2 else ""


def _close(sock: socket.socket, answer: bytes = b"") -> None:
    """Send ``answer`` if the socket takes it at once (never wait on a client), then close."""
    try:
        if answer:
            sock.setblocking(False)
            sock.send(answer)
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    sock.close()


__all__ = ["BoundedHTTPServer", "BoundedHandler", "RequestError", "HEADER_DEADLINE",
           "MAX_CONCURRENT", "RESERVED_SLOTS"]
