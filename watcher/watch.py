"""The watchdog side: turn filesystem events into suggestions, and keep the observer alive;
on network shares, where inotify hears nothing of other hosts' writes, a folder poller instead.

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

from watcher import mounts
from watcher.inbox import is_ignored_name, relative_input
from watcher.poll import FolderPoller

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


# Shop folders watched one by one at most; more, and the inbox is watched recursively as a whole.
MAX_SHOP_WATCHES = 64


class _PollThread(threading.Thread):
    """Runs ``FolderPoller.poll`` every ``interval`` seconds until stopped; never dies of an
    error (a share's hiccup is logged and the next poll tries again)."""

    def __init__(self, poller: FolderPoller, interval: float) -> None:
        super().__init__(name="poller", daemon=True)
        self.poller = poller
        self.interval = interval
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            try:
                self.poller.poll()
            except Exception:  # the poll loop is this thread's per-item boundary
                logger.exception("polling {} failed; trying again", self.poller.inbox)

    def stop(self) -> None:
        self.stopping.set()
        if self.is_alive() and self is not threading.current_thread():
            self.join(timeout=5)


class Watch:
    """Owns what hears about new files: an inotify observer, or a poller where inotify cannot
    hear them (``mounts.choose``); start, notice a dead thread, restart, stop.

    The observer watches the inbox itself (not recursively) and each shop folder in it
    (recursively), never ``_processados/``, ``_falhas/`` or ``.thumbgen/``: their events would
    only spend the kernel's queue during bursts. A shop folder made later is added by ``cover``.
    Past ``MAX_SHOP_WATCHES`` shop folders (watchdog runs a thread for each) the inbox is watched
    recursively as a whole instead.
    """

    def __init__(self, inbox: Path, mode: str, handler: InboxHandler,
                 poll_interval: float = 2.0) -> None:
        self.inbox = inbox
        self.mode = mode
        self.handler = handler
        self.poll_interval = poll_interval
        # a shop folder made later is watched from the observer's own thread, before the app
        # is asked to scan it: nothing written into it falls in between
        handler.on_folder = self._covering(handler.on_folder)
        self.active_mode = mode
        self.why = ""
        self.observer: BaseObserver | None = None
        self._per_shop = True  # one watch per shop folder (else one recursive on the inbox)
        self.poller: _PollThread | None = None
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
        choice = mounts.choose(self.mode, self.inbox)
        mode, self.why = choice.mode, choice.why
        if mode == "polling":
            self._start_polling()
        else:
            try:
                self.observer = self._start_observer()
            except OSError as exc:
                if self.mode != "auto":
                    raise
                # inotify limits reached, or a filesystem without inotify: poll instead
                logger.warning("native file watching unavailable ({}); falling back to polling",
                               exc)
                self.why = f"auto: inotify unavailable ({exc})"
                self._start_polling()
                mode = "polling"
        self.active_mode = mode

    def _start_polling(self) -> None:
        poller = FolderPoller(self.inbox, self.handler.on_file)
        poller.prime()
        self.poller = _PollThread(poller, self.poll_interval)
        self.poller.start()

    def _start_observer(self) -> BaseObserver:
        observer = Observer()
        observer.daemon = True
        shops = _shop_folders(self.inbox)
        # watchdog runs a thread per scheduled folder: past MAX_SHOP_WATCHES shops, one
        # recursive watch on the inbox (its own folders' events included) costs less
        self._per_shop = len(shops) <= MAX_SHOP_WATCHES
        observer.schedule(self.handler, str(self.inbox), recursive=not self._per_shop,
                          event_filter=WATCHED_EVENTS)
        for folder in shops if self._per_shop else ():
            observer.schedule(self.handler, str(folder), recursive=True,
                              event_filter=WATCHED_EVENTS)
        observer.start()
        return observer

    def _covering(self, on_folder: Callable[[Path], None]) -> Callable[[Path], None]:
        def cover_then(folder: Path) -> None:
            self.cover(folder)
            on_folder(folder)
        return cover_then

    def cover(self, folder: Path) -> None:
        """Watch ``folder`` (when a folder appeared) if it is a shop folder not watched yet; a
        folder deeper down is already watched with its shop. Never raises OSError."""
        observer = self.observer
        if (observer is None or not self._per_shop or folder.parent != self.inbox
                or is_ignored_name(folder.name)):
            return
        if any(Path(e.watch.path) == folder for e in list(observer.emitters)):
            return
        try:
            observer.schedule(self.handler, str(folder), recursive=True,
                              event_filter=WATCHED_EVENTS)
        except OSError as exc:  # gone again, or the watch limit: the rescans cover it
            logger.warning("cannot watch {}: {}", folder, exc)

    def alive(self) -> bool:
        """The observer (or poller) thread runs, so does the inbox's emitter, and the inbox is
        the folder it watches.

        When the inbox folder is removed, the emitter ends with its inotify watch while the
        observer thread lives on, deaf; when it is renamed away and made again, inotify keeps
        watching the old folder. A shop folder's emitter ends when that folder is removed: it
        is unscheduled here, quietly.
        """
        if _identity(self.inbox) != self._watched:
            return False
        if self.poller is not None:
            return self.poller.is_alive()
        observer = self.observer
        if observer is None or not observer.is_alive():
            return False
        root_alive = False
        for emitter in list(observer.emitters):
            if Path(emitter.watch.path) == self.inbox:
                root_alive = emitter.is_alive()
            elif not emitter.is_alive() or not os.path.isdir(emitter.watch.path):
                try:
                    observer.unschedule(emitter.watch)
                except (KeyError, OSError):
                    pass
        return root_alive

    def restart(self) -> None:
        self._stop_observer()
        self.start()

    def stop(self) -> None:
        self._stop_observer()
        logging.getLogger("watchdog.observers").removeHandler(self.overflow)

    def _stop_observer(self) -> None:
        poller, self.poller = self.poller, None
        if poller is not None:
            poller.stop()
        observer, self.observer = self.observer, None
        if observer is None:
            return
        try:
            observer.stop()
            if observer.is_alive():
                observer.join(timeout=5)
        except Exception as exc:  # a dead observer may fail to stop; it is gone either way
            logger.debug("observer stop: {}", exc)


def _shop_folders(inbox: Path) -> list[Path]:
    """The inbox's own folders that may hold inputs (not links, not ignored names)."""
    try:
        with os.scandir(inbox) as entries:
            return [Path(e.path) for e in entries
                    if not is_ignored_name(e.name) and e.is_dir(follow_symlinks=False)]
    except OSError:
        return []
