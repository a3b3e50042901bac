"""A stand-in for systemd's side of sd_notify: a real AF_UNIX datagram socket that records what
the daemon sends, with the time each message arrived."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path


class NotifyListener:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, name="notify-listener", daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            with self._lock:
                self.messages.append((time.monotonic(), fields))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def times(self, key: str, since: float = 0.0) -> list[float]:
        """When each message carrying ``key`` arrived (monotonic), from ``since`` on."""
        with self._lock:
            return [t for t, fields in self.messages if key in fields and t >= since]

    def values(self, key: str) -> list[str]:
        with self._lock:
            return [fields[key] for _, fields in self.messages if key in fields]

    def first(self, key: str) -> dict[str, str] | None:
        with self._lock:
            return next((fields for _, fields in self.messages if key in fields), None)
