"""The watchdog side: turn filesystem events into suggestions, and keep the observer alive.

The handler only hands paths over (``Settler.suggest``) and never raises: an exception in a handler
kills watchdog's observer thread silently. Lost events are covered by rescans, triggered on a
timer and whenever watchdog logs that the kernel's inotify queue overflowed.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from loguru import logger
from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from watcher.inbox import relative_input

# Created (first bytes, or an mv from another filesystem), moved/renamed in (dest_path) and
# closed-after-write (end of an upload, overwrite in place). Modified events are left out: they
# fire per write and flood the kernel queue in bursts.
WATCHED_EVENTS = [FileCreatedEvent, FileMovedEvent, FileClosedEvent, DirCreatedEvent,
                  DirMovedEvent]


class InboxHandler(FileSystemEventHandler):
    def __init__(self, inbox: Path, on_file: Callable[[PurePosixPath], None],
                 on_folder: Callable[[Path], None]) -> None:
        self.inbox = inbox
        self.on_file = on_file
        self.on_folder = on_folder
        self.errors = 0

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            self._dispatch(event)
        except Exception:  # never let an exception reach (and kill) the observer thread
            self.errors += 1

    def _dispatch(self, event: FileSystemEvent) -> None:
        path = getattr(event, "dest_path", "") or event.src_path
        path = path.decode() if isinstance(path, bytes) else path
        rel = relative_input(self.inbox, path)
        if rel is None:
            return
        if event.is_directory:
            # a folder created or moved in may already hold files that will get no events
            self.on_folder(self.inbox / rel)
        else:
            self.on_file(rel)


class OverflowFlag(logging.Handler):
    """Catches watchdog's "Inotify queue overflowed" log line: events were lost, rescan."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.event = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self.event.set()


def _identity(folder: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(folder)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def make_observer(mode: str, poll_interval: float = 1.0) -> BaseObserver:
    if mode == "polling":
        return PollingObserver(timeout=poll_interval)
    return Observer()


class Watch:
    """Owns the observer: start, notice a dead thread, restart, stop."""

    def __init__(self, inbox: Path, mode: str, handler: InboxHandler) -> None:
        self.inbox = inbox
        self.mode = mode
        self.handler = handler
        self.active_mode = mode
        self.observer: BaseObserver | None = None
        self._watched: tuple[int, int] | None = None  # (device, inode) of the folder watched
        self.overflow = OverflowFlag()
        watchdog_log = logging.getLogger("watchdog.observers")
        watchdog_log.addHandler(self.overflow)
        if not logging.NOTSET < watchdog_log.level <= logging.WARNING:
            # pinned: a root level of ERROR would drop the overflow warning before it got here
            watchdog_log.setLevel(logging.WARNING)

    def start(self) -> None:
        # a restart after the inbox was removed watches the new folder, as start-up would
        self.inbox.mkdir(parents=True, exist_ok=True)
        self._watched = _identity(self.inbox)
        mode = "native" if self.mode == "auto" else self.mode
        try:
            self.observer = self._start(mode)
        except OSError as exc:
            if self.mode != "auto":
                raise
            # inotify limits reached, or a filesystem without inotify: poll instead
            logger.warning("native file watching unavailable ({}); falling back to polling", exc)
            self.observer = self._start("polling")
            mode = "polling"
        self.active_mode = mode

    def _start(self, mode: str) -> BaseObserver:
        observer = make_observer(mode)
        observer.schedule(self.handler, str(self.inbox), recursive=True,
                          event_filter=WATCHED_EVENTS)
        observer.daemon = True
        observer.start()
        return observer

    def alive(self) -> bool:
        """The observer thread runs, so does its emitter, and the inbox is the folder it watches.

        When the inbox folder is removed, the emitter ends with its inotify watch while the
        observer thread lives on, deaf; when it is renamed away and made again, inotify keeps
        watching the old folder.
        """
        observer = self.observer
        return (observer is not None and observer.is_alive()
                and all(emitter.is_alive() for emitter in list(observer.emitters))
                and _identity(self.inbox) == self._watched)

    def restart(self) -> None:
        self._stop_observer()
        self.start()

    def stop(self) -> None:
        self._stop_observer()
        logging.getLogger("watchdog.observers").removeHandler(self.overflow)

    def _stop_observer(self) -> None:
        observer, self.observer = self.observer, None
        if observer is None:
            return
        try:
            observer.stop()
            if observer.is_alive():
                observer.join(timeout=5)
        except Exception as exc:  # a dead observer may fail to stop; it is gone either way
            logger.debug("observer stop: {}", exc)
