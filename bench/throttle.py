"""A TCP proxy on 127.0.0.1 that carries every byte over a link of a set rate, for the bench.

``ThrottledProxy(port, bits_per_second)`` listens on a free port of 127.0.0.1 and forwards each
connection to ``127.0.0.1:port``. All connections share one link per direction, as an office's
uplink and downlink are shared: a chunk leaves only when the link has carried everything queued
before it at ``bits_per_second``. ``sent`` and ``received`` count the bytes that crossed (client
to server, server to client), headers and all, since the last ``reset()``.
"""

from __future__ import annotations

import socket
import threading
import time

_CHUNK = 16 * 1024  # 6.6 ms at 20 Mbit/s: fine enough for calls of hundreds of ms


class Link:
    """One direction of the link: a queue of bytes drained at ``bits_per_second``."""

    def __init__(self, bits_per_second: float) -> None:
        self.bytes_per_second = bits_per_second / 8
        self.carried = 0
        self._free_at = 0.0  # when what is queued has left
        self._lock = threading.Lock()

    def carry(self, n: int) -> None:
        """Wait until ``n`` more bytes have crossed the link."""
        with self._lock:
            now = time.monotonic()
            self._free_at = max(self._free_at, now) + n / self.bytes_per_second
            done = self._free_at
            self.carried += n
        delay = done - time.monotonic()
        if delay > 0:
            time.sleep(delay)


class ThrottledProxy:
    def __init__(self, port: int, bits_per_second: float) -> None:
        self.target = ("127.0.0.1", port)
        self.up, self.down = Link(bits_per_second), Link(bits_per_second)
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self._closing = False
        self._thread = threading.Thread(target=self._accept, name="throttle", daemon=True)

    def __enter__(self) -> ThrottledProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing = True
        self._server.close()

    @property
    def sent(self) -> int:
        return self.up.carried

    @property
    def received(self) -> int:
        return self.down.carried

    def reset(self) -> None:
        self.up.carried = self.down.carried = 0

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            _Connection(client, upstream, self.up, self.down).start()


class _Connection:
    """One proxied connection: a pump per direction; both sockets closed when both are done."""

    def __init__(self, client: socket.socket, upstream: socket.socket, up: Link,
                 down: Link) -> None:
        self.sockets = (client, upstream)
        self.pumps = ((client, upstream, up), (upstream, client, down))
        self.running = 2
        self.lock = threading.Lock()

    def start(self) -> None:
        for src, dst, link in self.pumps:
            threading.Thread(target=self._pump, args=(src, dst, link), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, link: Link) -> None:
        """Copy ``src`` to ``dst`` through ``link`` until ``src`` ends; then end ``dst``'s
        sending side, as the peer did."""
        try:
            while chunk := src.recv(_CHUNK):
                link.carry(len(chunk))
                dst.sendall(chunk)
        except OSError:
            pass
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        with self.lock:
            self.running -= 1
            last = self.running == 0
        if last:
            for sock in self.sockets:
                sock.close()
