"""The photos a shop just sent (or sent back), followed on the page until their thumbnails appear.

A batch gets a random id that goes into the page's address (``/?acompanhar=<id>``), so it works
with JavaScript off and survives a reload. At most ``MAX_BATCHES`` are kept, oldest out first.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

MAX_BATCHES = 200

Message = tuple[str, dict[str, Any]]


@dataclass
class Batch:
    rels: list[PurePosixPath]
    notices: list[Message] = field(default_factory=list)
    when: float = field(default_factory=time.time)


class Tracker:
    def __init__(self, max_batches: int = MAX_BATCHES) -> None:
        self.max_batches = max_batches
        self._batches: OrderedDict[str, Batch] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, batch: Batch) -> str:
        key = secrets.token_urlsafe(9)
        with self._lock:
            self._batches[key] = batch
            while len(self._batches) > self.max_batches:
                self._batches.popitem(last=False)
        return key

    def get(self, key: str) -> Batch | None:
        with self._lock:
            return self._batches.get(key)


__all__ = ["Tracker", "Batch"]
