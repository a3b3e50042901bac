"""The watchdog side, on a real inotify observer over a temp folder."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

import pytest
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from watcher import watch as watch_mod
from watcher.watch import InboxHandler, OverflowFlag, Watch

P = PurePosixPath
WAIT = 5.0


class Recorder:
    """The callbacks of an InboxHandler: what reached them, and a way to wait for it."""

    def __init__(self) -> None:
        self.files: list[PurePosixPath] = []
        self.folders: list[Path] = []
        self._changed = threading.Condition()

    def on_file(self, rel: PurePosixPath) -> None:
        with self._changed:
            self.files.append(rel)
            self._changed.notify_all()

    def on_folder(self, folder: Path) -> None:
        with self._changed:
            self.folders.append(folder)
            self._changed.notify_all()

    def wait(self, predicate: Callable[[], bool], timeout: float = WAIT) -> bool:
        with self._changed:
            return self._changed.wait_for(predicate, timeout)

    def got_file(self, rel: str) -> bool:
        return self.wait(lambda: P(rel) in self.files)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "elsewhere"  # same filesystem, outside the watched tree
    folder.mkdir()
    return folder


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def watching(box: Path, recorder: Recorder) -> Iterator[Watch]:
    watch = Watch(box, "native", InboxHandler(box, recorder.on_file, recorder.on_folder))
    watch.start()
    assert watch.active_mode == "native"
    yield watch
    watch.stop()


def settle_events() -> None:
    """inotify delivers in well under a millisecond; give the observer thread a moment."""
    time.sleep(0.3)


# -- what reaches the callbacks --------------------------------------------------------------------

def test_a_created_file(watching: Watch, box: Path, recorder: Recorder) -> None:
    (box / "sub").mkdir()
    (box / "sub" / "a.jpg").write_bytes(b"photo")
    # written before the new shop folder was watched: reported with its folder (the app scans it)
    assert recorder.wait(lambda: P("sub/a.jpg") in recorder.files or box / "sub" in recorder.folders)
    settle_events()
    (box / "sub" / "b.jpg").write_bytes(b"photo")

    assert recorder.got_file("sub/b.jpg")


def _inotify_watched_inodes() -> set[int]:
    """Inodes of every folder this process has an inotify watch on (proc(5), fdinfo)."""
    inodes: set[int] = set()
    for fd in os.listdir("/proc/self/fdinfo"):
        try:
            text = Path(f"/proc/self/fdinfo/{fd}").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("inotify wd:"):
                inodes.add(int(line.split("ino:")[1].split()[0], 16))
    return inodes


def test_the_daemons_own_folders_are_not_watched(box: Path, recorder: Recorder) -> None:
    """Their events (claims, archiving, temp files) would spend the kernel's queue in bursts."""
    own = [box / "_processados" / "loja", box / "_falhas" / "loja", box / ".thumbgen" / "claimed"]
    shops = [box / "loja-a" / "sub", box / "loja-b"]
    for folder in own + shops:
        folder.mkdir(parents=True)
    before = _inotify_watched_inodes()
    watch = Watch(box, "native", InboxHandler(box, recorder.on_file, recorder.on_folder))
    watch.start()
    try:
        watched = _inotify_watched_inodes() - before
        assert {f.stat().st_ino for f in (box, box / "loja-a", *shops)} <= watched
        assert not {f.stat().st_ino for f in own + [f.parent for f in own]} & watched
        (box / "_processados" / "loja" / "a.jpg").write_bytes(b"x")
        (box / "loja-b" / "b.jpg").write_bytes(b"x")
        assert recorder.got_file("loja-b/b.jpg") and watch.alive()
        shutil.rmtree(box / "loja-b")  # a shop folder removed: its watch goes quietly
        settle_events()
        assert watch.alive()
    finally:
        watch.stop()


def test_a_file_moved_in_from_outside(watching: Watch, box: Path, outside: Path,
                                      recorder: Recorder) -> None:
    (outside / "a.jpg").write_bytes(b"photo")
    settle_events()

    os.rename(outside / "a.jpg", box / "a.jpg")

    assert recorder.got_file("a.jpg")


def test_a_part_file_renamed_in(watching: Watch, box: Path, recorder: Recorder) -> None:
    with (box / "a.jpg.part").open("wb") as fh:
        fh.write(b"photo")
    settle_events()

    os.rename(box / "a.jpg.part", box / "a.jpg")

    assert recorder.got_file("a.jpg")
    settle_events()
    assert P("a.jpg.part") not in recorder.files


def test_an_overwrite_in_place(box: Path, recorder: Recorder) -> None:
    (box / "a.jpg").write_bytes(b"old")  # there before the watch: no created event later
    watch = Watch(box, "native", InboxHandler(box, recorder.on_file, recorder.on_folder))
    watch.start()
    try:
        settle_events()
        assert recorder.files == []
        with (box / "a.jpg").open("r+b") as fh:
            fh.write(b"new")

        assert recorder.got_file("a.jpg")
    finally:
        watch.stop()


def test_a_folder_moved_in(watching: Watch, box: Path, outside: Path,
                           recorder: Recorder) -> None:
    (outside / "lote" / "fundo").mkdir(parents=True)
    (outside / "lote" / "a.jpg").write_bytes(b"photo")
    (outside / "lote" / "fundo" / "b.jpg").write_bytes(b"photo")
    settle_events()

    os.rename(outside / "lote", box / "lote")

    assert recorder.wait(lambda: box / "lote" in recorder.folders)


# watchdog warns when nested folders appear faster than it adds watches for them
@pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning")
def test_ignored_names_and_places_never_reach_the_callbacks(watching: Watch, box: Path,
                                                            recorder: Recorder) -> None:
    for rel in ("_processados/a.jpg", ".thumbgen/claimed/w/b.jpg", "c.jpg.part", "d.tmp",
                "Thumbs.db", ".DS_Store", "sub/_rascunho/e.jpg"):
        (box / rel).parent.mkdir(parents=True, exist_ok=True)
        (box / rel).write_bytes(b"x")
    (box / "last.jpg").write_bytes(b"x")

    assert recorder.got_file("last.jpg")
    settle_events()
    assert set(recorder.files) == {P("last.jpg")}
    assert set(recorder.folders) == {box / "sub"}


def test_a_file_moved_out_is_not_reported(watching: Watch, box: Path, outside: Path,
                                          recorder: Recorder) -> None:
    (box / "a.jpg").write_bytes(b"x")
    assert recorder.got_file("a.jpg")
    settle_events()  # its closed event too
    recorder.files.clear()

    os.rename(box / "a.jpg", outside / "a.jpg")
    (box / "b.jpg").write_bytes(b"x")

    assert recorder.got_file("b.jpg")
    assert P("a.jpg") not in recorder.files


# -- the handler never raises ----------------------------------------------------------------------

def test_a_callback_that_raises_never_kills_the_observer(box: Path, recorder: Recorder) -> None:
    calls: list[PurePosixPath] = []

    def explode_once(rel: PurePosixPath) -> None:
        calls.append(rel)
        if len(calls) == 1:
            raise RuntimeError("a bug in the callback")
        recorder.on_file(rel)

    handler = InboxHandler(box, explode_once, recorder.on_folder)
    watch = Watch(box, "native", handler)
    watch.start()
    try:
        (box / "first.jpg").write_bytes(b"x")
        assert recorder.wait(lambda: handler.errors >= 1)
        (box / "second.jpg").write_bytes(b"x")

        assert recorder.got_file("second.jpg")
        assert watch.alive()
        assert calls[0] == P("first.jpg")
    finally:
        watch.stop()


def test_the_handler_survives_events_it_cannot_read(box: Path, recorder: Recorder) -> None:
    class Odd(FileSystemEvent):
        event_type = "created"

    handler = InboxHandler(box, recorder.on_file, recorder.on_folder)
    handler.dispatch(Odd(b"\xff\xfe/not-utf8"))  # bytes that do not decode
    handler.dispatch(Odd(str(box / "ok.jpg")))

    assert handler.errors == 1
    assert recorder.files == [P("ok.jpg")]


# -- a dead observer -------------------------------------------------------------------------------

class Exploding(FileSystemEventHandler):
    """A handler outside our control: its exception ends the observer thread, as in NOTES."""

    def dispatch(self, event: FileSystemEvent) -> None:
        raise RuntimeError("boom")


def test_alive_is_false_once_the_observer_thread_died_and_restart_revives_it(
        watching: Watch, box: Path, recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threading, "excepthook", lambda args: None)  # the death is expected
    assert watching.alive()
    observer = watching.observer
    assert observer is not None
    observer.schedule(Exploding(), str(box))
    (box / "kills.jpg").write_bytes(b"x")
    observer.join(WAIT)

    assert not observer.is_alive()
    assert not watching.alive()

    watching.restart()

    assert watching.alive()
    assert watching.observer is not observer
    (box / "after.jpg").write_bytes(b"x")
    assert recorder.got_file("after.jpg")


def test_alive_is_false_after_a_stop_and_restart_brings_it_back(watching: Watch, box: Path,
                                                                recorder: Recorder) -> None:
    observer = watching.observer
    assert observer is not None
    observer.stop()
    observer.join(WAIT)
    assert not watching.alive()

    watching.restart()

    assert watching.alive()
    (box / "after.jpg").write_bytes(b"x")
    assert recorder.got_file("after.jpg")


def test_alive_is_false_once_the_inbox_folder_was_removed_and_restart_revives_it(
        watching: Watch, box: Path, recorder: Recorder) -> None:
    """The observer thread lives on, but the inotify watch went with the folder: deaf."""
    (box / "sub").mkdir()
    assert recorder.wait(lambda: box / "sub" in recorder.folders)
    settle_events()
    (box / "sub" / "a.jpg").write_bytes(b"x")
    assert recorder.got_file("sub/a.jpg")
    shutil.rmtree(box)
    box.mkdir()
    assert recorder.wait(lambda: not watching.alive())
    assert watching.observer is not None and watching.observer.is_alive()

    watching.restart()

    assert watching.alive()
    (box / "b.jpg").write_bytes(b"x")
    assert recorder.got_file("b.jpg")


def test_alive_is_false_once_the_inbox_folder_was_replaced(watching: Watch, box: Path,
                                                          recorder: Recorder) -> None:
    """inotify follows the folder it watches: after ``mv produtos old; mkdir produtos`` the
    observer and its emitter live on, watching ``old``."""
    os.rename(box, box.with_name("old"))
    box.mkdir()

    assert not watching.alive()
    watching.restart()
    assert watching.alive()
    (box / "d.jpg").write_bytes(b"x")
    assert recorder.got_file("d.jpg")


def test_restart_recreates_a_missing_inbox(watching: Watch, box: Path,
                                           recorder: Recorder) -> None:
    shutil.rmtree(box)
    assert recorder.wait(lambda: not watching.alive())

    watching.restart()  # the folder is made again, as at start-up

    assert watching.alive() and watching.active_mode == "native"
    (box / "c.jpg").write_bytes(b"x")
    assert recorder.got_file("c.jpg")


def test_a_watch_never_started_is_not_alive(box: Path, recorder: Recorder) -> None:
    watch = Watch(box, "native", InboxHandler(box, recorder.on_file, recorder.on_folder))
    try:
        assert not watch.alive()
    finally:
        watch.stop()


def test_polling_mode_sees_files_too(box: Path, recorder: Recorder) -> None:
    watch = Watch(box, "polling", InboxHandler(box, recorder.on_file, recorder.on_folder))
    watch.start()
    try:
        assert watch.active_mode == "polling"
        (box / "polled.jpg").write_bytes(b"x")
        assert recorder.wait(lambda: P("polled.jpg") in recorder.files, timeout=10)
    finally:
        watch.stop()


class NoInotify(Observer):  # type: ignore[misc, valid-type]
    """An inotify observer on a machine whose inotify watch limit is used up."""

    def start(self) -> None:
        raise OSError(errno.ENOSPC, "inotify watch limit reached")


def test_auto_mode_falls_back_to_polling_when_inotify_fails(
        box: Path, recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watch_mod, "Observer", NoInotify)
    watch = Watch(box, "auto", InboxHandler(box, recorder.on_file, recorder.on_folder))
    watch.start()
    try:
        assert watch.active_mode == "polling" and watch.alive()
        (box / "polled.jpg").write_bytes(b"x")
        assert recorder.wait(lambda: P("polled.jpg") in recorder.files, timeout=10)
    finally:
        watch.stop()


def test_native_mode_says_so_when_inotify_fails(box: Path, recorder: Recorder,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watch_mod, "Observer", NoInotify)
    watch = Watch(box, "native", InboxHandler(box, recorder.on_file, recorder.on_folder))
    try:
        with pytest.raises(OSError, match="limit"):
            watch.start()
        assert not watch.alive()
    finally:
        watch.stop()


# -- inotify overflow ------------------------------------------------------------------------------

OVERFLOW_LOGGER = "watchdog.observers.inotify_c"


def test_the_overflow_log_line_sets_the_flag(watching: Watch) -> None:
    assert not watching.overflow.event.is_set()
    logging.getLogger(OVERFLOW_LOGGER).info("an unrelated line")
    logging.getLogger(OVERFLOW_LOGGER).warning("something else went wrong")
    assert not watching.overflow.event.is_set()

    logging.getLogger(OVERFLOW_LOGGER).warning(
        "Inotify queue overflowed; filesystem events were lost")

    assert watching.overflow.event.is_set()


def test_the_overflow_flag_works_whatever_the_root_logger_level(watching: Watch) -> None:
    root = logging.getLogger()
    before = root.level
    root.setLevel(logging.ERROR)  # an embedding program that only wants errors
    try:
        logging.getLogger(OVERFLOW_LOGGER).warning(
            "Inotify queue overflowed; filesystem events were lost")
    finally:
        root.setLevel(before)

    assert watching.overflow.event.is_set()


def test_a_stopped_watch_no_longer_listens(box: Path, recorder: Recorder) -> None:
    watch = Watch(box, "native", InboxHandler(box, recorder.on_file, recorder.on_folder))
    flag = watch.overflow
    watch.stop()

    logging.getLogger(OVERFLOW_LOGGER).warning("Inotify queue overflowed")

    assert not flag.event.is_set()
    assert flag not in logging.getLogger("watchdog.observers").handlers


def test_overflow_flag_alone() -> None:
    flag = OverflowFlag()
    record = logging.LogRecord(OVERFLOW_LOGGER, logging.WARNING, __file__, 1,
                               "Inotify queue overflowed; reconciling recursive watches below %r",
                               ("/x",), None)
    flag.handle(record)
    assert flag.event.is_set()
