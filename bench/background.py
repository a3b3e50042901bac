"""A loop in a daemon thread that a bench starts and stops (``start``/``stop`` or ``with``)."""

from __future__ import annotations

import threading
from typing import Self


class Background:
    """Subclasses write ``_loop``, which returns once ``self._stop`` is set."""

    def __init__(self, name: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def _loop(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
