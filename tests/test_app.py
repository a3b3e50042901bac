"""The App in-process: real watcher, real workers, the real local model, its main loop in a thread."""

from __future__ import annotations

import io
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from PIL import Image

from tests.conftest import HangingRemover
from tests.e2e.conftest import wait_for
from watcher.errors import RemovalUnavailable
from watcher.model import JobStatus
from watcher.stages.removal.local import LocalRemover

RunningApp = Callable[..., tuple[Any, Any]]


def sample(app: Any, name: str, **labels: str) -> float:
    return app.metrics.registry.get_sample_value(name, labels) or 0.0


def deafen(app: Any) -> Any:
    """Keep the observer thread alive but stop its events: what a lost event looks like."""
    observer = app.watch.observer
    observer.unschedule_all()
    return observer


def test_the_app_turns_dropped_photos_into_thumbnails(running_app: RunningApp, model_path: Path,
                                                      data_dir: Path) -> None:
    app, _ = running_app(LocalRemover(model_path), MODEL_PATH=model_path)
    inbox, out = app.settings.upload_path, app.settings.output_path
    (inbox / "canecas").mkdir()
    shutil.copyfile(data_dir / "products" / "books.jpg", inbox / "books.jpg")
    shutil.copyfile(data_dir / "products" / "mugs.jpg", inbox / "canecas" / "mugs.jpg")

    wait_for(lambda: app.pool.done_count == 2, 60, message="two thumbnails")

    for rel in ("books.jpg", "canecas/mugs.jpg"):
        with Image.open(out / rel) as thumb:
            assert (thumb.format, thumb.size) == ("JPEG", (300, 300))
        original = (data_dir / "products" / Path(rel).name).read_bytes()
        assert (app.settings.processed_path / rel).read_bytes() == original
        assert not (inbox / rel).exists()
    assert sample(app, "thumbgen_files_total", outcome="done") == 2
    assert not list((app.settings.state_path / "claimed" / "test-worker").rglob("*.jpg"))


def test_a_folder_moved_in_is_processed(running_app: RunningApp, model_path: Path,
                                        data_dir: Path, tmp_path: Path) -> None:
    app, _ = running_app(LocalRemover(model_path), MODEL_PATH=model_path, RESCAN_INTERVAL=3600)
    batch = tmp_path / "lote"
    (batch / "fundo").mkdir(parents=True)
    shutil.copyfile(data_dir / "products" / "books.jpg", batch / "a.jpg")
    shutil.copyfile(data_dir / "products" / "mugs.jpg", batch / "fundo" / "b.jpg")

    os.rename(batch, app.settings.upload_path / "lote")

    wait_for(lambda: app.pool.done_count == 2, 60, message="the moved-in folder processed")
    assert (app.settings.output_path / "lote" / "a.jpg").is_file()
    assert (app.settings.output_path / "lote" / "fundo" / "b.jpg").is_file()


def test_a_dead_observer_is_restarted_and_a_rescan_finds_what_it_missed(
        running_app: RunningApp, model_path: Path, data_dir: Path) -> None:
    app, health = running_app(LocalRemover(model_path), MODEL_PATH=model_path,
                              RESCAN_INTERVAL=3600)
    observer = deafen(app)
    shutil.copyfile(data_dir / "products" / "books.jpg", app.settings.upload_path / "books.jpg")
    time.sleep(0.5)
    assert app.pool.done_count == 0  # no event, no timer rescan: nobody knows it is there

    observer.stop()  # the observer thread ends
    observer.join(5)

    wait_for(lambda: app.pool.done_count == 1, 60, message="the missed photo processed")
    assert app.watch.alive()
    assert app.watch.observer is not observer
    assert sample(app, "thumbgen_observer_restarts_total") == 1
    assert sample(app, "thumbgen_rescans_total", reason="observer restart") == 1
    assert (app.settings.output_path / "books.jpg").is_file()
    shutil.copyfile(data_dir / "products" / "mugs.jpg", app.settings.upload_path / "mugs.jpg")
    wait_for(lambda: app.pool.done_count == 2, 60, message="the new observer's event")


# watchdog warns when nested folders appear faster than it adds watches for them
@pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning")
def test_a_removed_and_recreated_inbox_is_watched_again(running_app: RunningApp,
                                                       model_path: Path, data_dir: Path) -> None:
    app, _ = running_app(LocalRemover(model_path), MODEL_PATH=model_path, RESCAN_INTERVAL=3600)
    inbox = app.settings.upload_path
    shutil.rmtree(inbox)  # an operator empties the share the hard way
    inbox.mkdir()
    wait_for(lambda: sample(app, "thumbgen_observer_restarts_total") == 1, 10,
             message="the deaf watcher restarted")

    shutil.copyfile(data_dir / "products" / "books.jpg", inbox / "books.jpg")

    wait_for(lambda: app.pool.done_count == 1, 60, message="the photo in the new folder")
    assert app.watch.alive()


def test_an_inotify_overflow_triggers_a_rescan(running_app: RunningApp, model_path: Path,
                                               data_dir: Path) -> None:
    app, _ = running_app(LocalRemover(model_path), MODEL_PATH=model_path, RESCAN_INTERVAL=3600)
    deafen(app)
    shutil.copyfile(data_dir / "products" / "books.jpg", app.settings.upload_path / "books.jpg")
    time.sleep(0.5)
    assert app.pool.done_count == 0

    logging.getLogger("watchdog.observers.inotify_c").warning(
        "Inotify queue overflowed; filesystem events were lost")

    wait_for(lambda: app.pool.done_count == 1, 60, message="the photo found by the rescan")
    assert sample(app, "thumbgen_rescans_total", reason="overflow") == 1
    assert not app.watch.overflow.event.is_set()


class RemoteDown:
    """A remover that cannot serve (remote down, no fallback): every file must wait."""

    name = "down"
    cpu_bound = False

    def __init__(self) -> None:
        self.calls = 0

    def mask(self, image: Image.Image) -> Image.Image:
        self.calls += 1
        raise RemovalUnavailable("remote background removal is unavailable (test)")

    def close(self) -> None:
        pass


def test_a_file_that_must_wait_is_not_retried_in_a_loop(running_app: RunningApp,
                                                        data_dir: Path) -> None:
    remover = RemoteDown()
    app, _ = running_app(remover, RESCAN_INTERVAL=3600)
    app.pool.release_hold = 3.0
    inbox = app.settings.upload_path
    shutil.copyfile(data_dir / "products" / "books.jpg", inbox / "books.jpg")

    wait_for(lambda: app.pool.counts[JobStatus.RELEASED] == 1, 30, message="the first try")
    assert (inbox / "books.jpg").is_file()
    time.sleep(1.0)  # SETTLE_SECONDS is 0: without the hold it would have come round by now
    assert remover.calls == 1  # released: back in the inbox, and left alone for a while
    wait_for(lambda: app.pool.counts[JobStatus.RELEASED] == 2, 30,
             message="the try after the hold")
    assert remover.calls == 2
    assert (inbox / "books.jpg").is_file()


class ClosableRemover:
    """Keeps the whole photo; like the local model, refuses to run once closed."""

    name = "closable"
    cpu_bound = True

    def __init__(self) -> None:
        self.closed = threading.Event()

    def mask(self, image: Image.Image) -> Image.Image:
        if self.closed.is_set():
            raise RuntimeError("mask() called after close()")
        return Image.new("L", image.size, 255)

    def close(self) -> None:
        self.closed.set()


def test_a_file_taken_as_shutdown_begins_is_finished_not_rejected(
        running_app: RunningApp, data_dir: Path) -> None:
    """A worker took the photo from the queue but has not claimed it yet (a slow rename on a
    share) when SIGTERM comes: the shutdown must wait for it, not close the remover under it."""
    remover = ClosableRemover()
    app, _ = running_app(remover, RESCAN_INTERVAL=3600)
    stopping = threading.Event()
    app.on_stopping.append(lambda _app: stopping.set())
    taking = threading.Event()
    real_claim = app.claims.claim

    def slow_claim(rel: PurePosixPath) -> Path | None:
        taking.set()
        stopping.wait(10)
        time.sleep(0.5)  # the rename is slow: shutdown has drained the queue meanwhile
        return real_claim(rel)

    app.claims.claim = slow_claim
    shutil.copyfile(data_dir / "products" / "books.jpg", app.settings.upload_path / "books.jpg")
    assert taking.wait(30)

    app.flags.stop.set()
    wait_for(lambda: not [t for t in app.pool._threads if t.is_alive()], 30,
             message="the workers to end")

    assert not (app.settings.failed_path / "books.jpg").exists()
    assert (app.settings.output_path / "books.jpg").is_file()
    assert (app.settings.processed_path / "books.jpg").is_file()


def tiny_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 24), (10, 120, 200)).save(buffer, "JPEG")
    return buffer.getvalue()


def test_a_burst_of_10000_files_with_slow_workers_never_grows_the_queue(
        running_app: RunningApp) -> None:
    remover = HangingRemover()  # every worker gets stuck on its first photo
    app, _ = running_app(remover, RESCAN_INTERVAL=3600)
    inbox = app.settings.upload_path
    shops = 10  # each shop with nothing queued may have one path past the bound
    maxsize = app.work.maxsize + shops
    threads = len(app.pool._threads)
    data = tiny_jpeg()
    peak = 0

    def check() -> None:
        nonlocal peak
        held = app.work.queued()
        assert len(held) <= maxsize
        assert all(type(item) is PurePosixPath for item in held)  # paths, never image data
        assert len(app.work._busy) <= maxsize + threads
        assert len(app.pool.in_flight) <= threads
        peak = max(peak, len(held))

    for n in range(10_000):
        (inbox / f"b{n // (10_000 // shops)}").mkdir(exist_ok=True)
        (inbox / f"b{n // (10_000 // shops)}" / f"{n:05}.jpg").write_bytes(data)
        if n % 500 == 0:
            check()
    def seen() -> int:
        # held by the settle table or left on disk past a shop's window (counted), queued, in
        # flight; a queued path that had another event is held again too: at least 10 000
        return app.settler.waiting() + len(app.work.queued()) + len(app.pool.in_flight)

    window = app.settler.window
    wait_for(lambda: len(app.pool.in_flight) == threads and app.work.free() == 0
             and seen() >= 10_000 and len(app.settler) <= shops * window, 30,
             message="every worker stuck, the queue full, all seen, a window held per shop")
    for _ in range(10):
        check()
        time.sleep(0.05)

    assert app.work.maxsize < peak <= maxsize  # full, and every shop got its turn
    assert len(app.pool.in_flight) == threads
    claimed = list((app.settings.state_path / "claimed").rglob("*.jpg"))
    assert len(claimed) == threads  # only what is in flight has left the inbox
    # a queued path that had another event sits in the settle table too (to be looked at once
    # it is no longer busy): the depth may count it twice, never more
    assert 10_000 - threads <= app.queue_depth() <= 10_000 - threads + maxsize
    assert 10_000 - threads <= sample(app, "thumbgen_queue_depth") <= 10_000 - threads + maxsize


def test_the_first_photo_does_not_wait_for_the_start_up_scan(
        running_app: RunningApp, monkeypatch: pytest.MonkeyPatch) -> None:
    """The scan runs on its own thread, shop by shop: the first shop listed is fed to the workers
    while the last one is still being scanned (held here until a photo is in work). READY comes
    once the scan is done."""
    from watcher import rescans

    data = tiny_jpeg()
    go_on = threading.Event()
    seen: dict[str, Any] = {}
    real = rescans.oldest_in_lane

    def slow_scan(inbox: Path, lane: str, count: int) -> tuple[list[Any], int]:
        if lane == "z-ultima":
            assert go_on.wait(30)
        return real(inbox, lane, count)

    def fill(app: Any, health: Any) -> None:
        for shop in ("a-primeira", "z-ultima"):
            for n in range(3):
                path = app.settings.upload_path / shop / f"{n}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)

        def watch() -> None:  # what the app is doing once a photo is in work
            if remover.entered.wait(30):
                seen.update(ready=app.ready.is_set(), scans=app.rescans.full_scans,
                            shops={job.rel.parent.name for job in app.pool.in_flight.values()})
            go_on.set()
            remover.release.set()

        threading.Thread(target=watch, daemon=True).start()

    monkeypatch.setattr(rescans, "oldest_in_lane", slow_scan)
    remover = HangingRemover()
    app, _ = running_app(remover, before_run=fill, RESCAN_INTERVAL=3600)

    assert seen == {"ready": False, "scans": 0, "shops": {"a-primeira"}}
    wait_for(lambda: app.pool.done_count == 6, 30, message="every photo of both shops")
