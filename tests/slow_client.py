"""Slow HTTP clients on real sockets, and a prober that times real requests while they hold on.

A ``Trickle`` sends a request one byte at a time, a byte every ``interval`` seconds, and never
ends its headers: the shape of a slow-loris client, or of a broken proxy. It notes when the server
closes the connection and what the server said before closing.
"""

from __future__ import annotations

import itertools
import select
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass


def _endless() -> Iterator[int]:
    """A request line and a header that never ends: an unfinished request forever."""
    return itertools.chain(b"GET /livez HTTP/1.1\r\nHost: probe\r\nX-Slow: ",
                           itertools.repeat(ord("a")))


class Trickle(threading.Thread):
    def __init__(self, port: int, interval: float, host: str = "127.0.0.1") -> None:
        super().__init__(name="trickle", daemon=True)
        self.interval = interval
        self.sock = socket.create_connection((host, port), timeout=5)
        self.opened = time.monotonic()
        self.closed_after: float | None = None  # seconds from connect to the server's close
        self.answer = b""
        self._halt = threading.Event()

    def run(self) -> None:
        try:
            for byte in _endless():
                self.sock.sendall(bytes([byte]))
                readable, _, _ = select.select([self.sock], [], [], self.interval)
                if readable:  # the server answered or closed: read to the end
                    while chunk := self.sock.recv(4096):
                        self.answer += chunk
                    break
                if self._halt.is_set():
                    return
        except OSError:  # reset, or closed by stop()
            if self._halt.is_set():
                return
        self.closed_after = time.monotonic() - self.opened

    def stop(self) -> None:
        self._halt.set()
        self.join(self.interval + 1)
        self.sock.close()


def start_trickles(port: int, count: int) -> list[Trickle]:
    """``count`` connections, one byte every 1.5, 2 or 3 s in turn: no byte is due near the 5 s
    header deadline, where the server's close could cross it and reset the connection."""
    slow = [Trickle(port, interval=(1.5, 2.0, 3.0)[i % 3]) for i in range(count)]
    for trickle in slow:
        trickle.start()
    return slow


@dataclass(frozen=True)
class Probe:
    path: str
    status: int
    seconds: float


def get_status(url: str, timeout: float = 5) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as answer:
            answer.read()
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:  # refused, reset or timed out: the probe failed
        return 0


def probe_during(base_url: str, paths: Iterable[str], seconds: float,
                 pause: float = 0.2) -> list[Probe]:
    """GET each path in turn for ``seconds``; every answer with its status and latency."""
    paths = list(paths)
    probes: list[Probe] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for path in paths:
            started = time.monotonic()
            status = get_status(base_url + path)
            probes.append(Probe(path, status, time.monotonic() - started))
        time.sleep(pause)
    return probes


def probe_while_trickling(base_url: str, port: int, paths: Iterable[str], count: int = 12,
                          seconds: float = 6.5) -> tuple[list[Probe], list[Trickle]]:
    """Probe ``paths`` for ``seconds`` while ``count`` trickles hold connections; the probes,
    and the trickles once the server has closed them (or 3 s more have passed)."""
    slow = start_trickles(port, count)
    try:
        probes = probe_during(base_url, paths, seconds)
        for trickle in slow:
            trickle.join(timeout=3)
    finally:
        for trickle in slow:
            trickle.stop()
    return probes, slow
