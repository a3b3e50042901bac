"""The bounded work queue and the worker pool that drains it through the real pipeline."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

import pytest
from PIL import Image
from prometheus_client import CollectorRegistry

from tests.conftest import HangingRemover
from tests.e2e.conftest import wait_for
from watcher.claim import Claims
from watcher.config import Settings
from watcher.errors import RemovalUnavailable
from watcher.metrics import Metrics
from watcher.model import JobStatus
from watcher.pipeline import Pipeline
from watcher.worker import WorkerPool, WorkQueue

P = PurePosixPath


# -- the queue -------------------------------------------------------------------------------------

def test_the_queue_is_bounded() -> None:
    work = WorkQueue(maxsize=3)

    assert [work.put(P(f"{n}.jpg")) for n in range(5)] == [True, True, True, False, False]
    assert (work.qsize(), work.free()) == (3, 0)
    assert not work.busy(P("3.jpg"))  # refused: not held, so a later put may take it


def test_the_queue_never_holds_a_path_twice() -> None:
    work = WorkQueue(maxsize=10)

    assert work.put(P("a.jpg"))
    assert not work.put(P("a.jpg"))  # queued
    assert work.get(timeout=0.1) == P("a.jpg")
    assert work.busy(P("a.jpg"))
    assert not work.put(P("a.jpg"))  # in flight
    work.done(P("a.jpg"))
    assert not work.busy(P("a.jpg"))
    assert work.put(P("a.jpg"))
    assert work.qsize() == 1


def test_many_threads_putting_one_path_queue_it_once() -> None:
    work = WorkQueue(maxsize=100)
    start = threading.Barrier(8)
    accepted: list[bool] = []

    def put() -> None:
        start.wait()
        for n in range(50):
            accepted.append(work.put(P(f"{n}.jpg")))

    threads = [threading.Thread(target=put) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert accepted.count(True) == 50
    assert work.qsize() == 50


def test_shops_take_turns_and_an_idle_shop_is_served_first() -> None:
    work = WorkQueue(maxsize=4)
    for n in range(4):
        assert work.put(P(f"loja-a/{n}.jpg"))
    assert work.get(timeout=0.1) == P("loja-a/0.jpg")

    assert work.put(P("loja-b/new.jpg"))  # loja-b had nothing queued: next in turn
    assert work.get(timeout=0.1) == P("loja-b/new.jpg")
    assert work.get(timeout=0.1) == P("loja-a/1.jpg")


def test_a_shop_whose_last_path_was_just_taken_waits_its_turn() -> None:
    """Every shop backlogged with one path queued each (the main loop tops up each shop that
    lacks one): the shop just served is not quiet, so it cannot be served again and again."""
    work = WorkQueue(maxsize=3)
    for shop in ("a", "b", "c"):
        assert work.put(P(f"loja-{shop}/0.jpg"))
    taken = []
    for n in range(1, 7):
        rel = work.get(timeout=0.1)
        assert rel is not None
        taken.append(rel.parent.name)
        assert work.lacks(rel.parent.name)
        assert work.put(rel.parent / f"{n}.jpg")  # topped up while its photo is in flight

    assert sorted(taken[:3]) == sorted(taken[3:]) == ["loja-a", "loja-b", "loja-c"]

    for rel in work.drain():
        work.done(rel)
    work.done(P("loja-x/quiet-after.jpg"))  # never queued: nothing to undo
    assert work.put(P("loja-c/again.jpg")) and work.put(P("loja-d/new.jpg"))
    assert work.get(timeout=0.1) == P("loja-d/new.jpg")  # loja-c has a photo in flight


def test_a_shop_with_nothing_queued_gets_one_path_past_the_bound() -> None:
    work = WorkQueue(maxsize=2)
    assert [work.put(P(f"loja-a/{n}.jpg")) for n in range(3)] == [True, True, False]
    assert work.free() == 0 and work.lacks("loja-b") and not work.lacks("loja-a")

    assert work.put(P("loja-b/a.jpg"))
    assert not work.put(P("loja-b/b.jpg"))  # one past the bound per shop, no more
    assert work.put(P("top.jpg"))  # the top level is a shop too
    assert work.qsize() == 4
    assert [work.get(timeout=0.1) for _ in range(4)] == [
        P("top.jpg"), P("loja-b/a.jpg"), P("loja-a/0.jpg"), P("loja-a/1.jpg")]


def test_get_waits_then_gives_none() -> None:
    assert WorkQueue(maxsize=2).get(timeout=0.05) is None


def test_drain_empties_the_queue_and_frees_the_paths() -> None:
    work = WorkQueue(maxsize=4)
    for name in ("a.jpg", "b.jpg"):
        work.put(P(name))

    assert work.drain() == [P("a.jpg"), P("b.jpg")]
    assert work.qsize() == 0
    assert not work.busy(P("a.jpg"))
    assert work.put(P("a.jpg"))


# -- the pool --------------------------------------------------------------------------------------

class WhiteRemover:
    """A remover that keeps the whole photo: the pipeline's other stages do the real work."""

    name = "white"
    cpu_bound = True

    def __init__(self, explode_on: str = "") -> None:
        self.explode_on = explode_on
        self.calls = 0

    def mask(self, image: Image.Image) -> Image.Image:
        self.calls += 1
        if self.explode_on and image.size == (17, 17):
            raise RuntimeError(self.explode_on)
        return Image.new("L", image.size, 255)

    def close(self) -> None:
        pass


def jpeg(size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    s = make_settings(OUTPUT_SIZE=64, WORKERS=2, SETTLE_SECONDS=0)
    for folder in (s.upload_path, s.output_path, s.processed_path, s.failed_path):
        folder.mkdir(parents=True, exist_ok=True)
    return s


@pytest.fixture
def make_pool(settings: Settings) -> Iterator[Callable[..., WorkerPool]]:
    pools: list[WorkerPool] = []

    def make(remover: object, threads: int = 2, maxsize: int = 8) -> WorkerPool:
        metrics = Metrics(CollectorRegistry())
        claims = Claims(settings.upload_path, settings.state_path, settings.worker_id)
        claims.setup()
        pipeline = Pipeline(settings, remover, metrics)  # type: ignore[arg-type]
        pool = WorkerPool(pipeline, claims, WorkQueue(maxsize), threads, metrics)
        pool.start()
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.pipeline.remover.close()
        pool.stop(5)


def test_the_pool_runs_queued_paths_through_the_pipeline(settings: Settings,
                                                         make_pool: Callable[..., WorkerPool]) -> None:
    inbox = settings.upload_path
    (inbox / "sub").mkdir()
    (inbox / "sub" / "a.jpg").write_bytes(jpeg())
    (inbox / "b.jpg").write_bytes(b"not an image at all")
    pool = make_pool(WhiteRemover())

    for rel in (P("sub/a.jpg"), P("b.jpg"), P("gone.jpg")):
        assert pool.work.put(rel)
    wait_for(lambda: pool.done_count == 2 and pool.work.qsize() == 0 and not pool.in_flight,
             10, message="two files finished")

    assert (settings.output_path / "sub" / "a.jpg").is_file()
    assert (settings.processed_path / "sub" / "a.jpg").read_bytes() == jpeg()
    assert (settings.failed_path / "b.jpg.erro.txt").is_file()
    assert pool.counts[JobStatus.DONE] == 1
    assert pool.counts[JobStatus.REJECTED] == 1
    assert pool.last_done is not None
    assert not any(pool.work.busy(rel) for rel in (P("sub/a.jpg"), P("b.jpg"), P("gone.jpg")))
    samples = pool.metrics.registry
    assert samples.get_sample_value("thumbgen_files_total", {"outcome": "done"}) == 1
    assert samples.get_sample_value("thumbgen_files_total", {"outcome": "rejected"}) == 1
    assert samples.get_sample_value("thumbgen_failures_total", {"reason": "not_a_photo"}) == 1


def test_a_bug_in_a_stage_fails_the_file_and_the_worker_goes_on(
        settings: Settings, make_pool: Callable[..., WorkerPool]) -> None:
    inbox = settings.upload_path
    (inbox / "bad.jpg").write_bytes(jpeg((17, 17)))
    (inbox / "good.jpg").write_bytes(jpeg())
    pool = make_pool(WhiteRemover(explode_on="a bug"), threads=1)

    pool.work.put(P("bad.jpg"))
    pool.work.put(P("good.jpg"))
    wait_for(lambda: pool.done_count == 2, 10, message="both files finished")

    assert pool.counts[JobStatus.FAILED] == 1
    assert pool.counts[JobStatus.DONE] == 1
    assert (settings.failed_path / "bad.jpg").read_bytes() == jpeg((17, 17))
    assert pool.alive() == 1


def test_an_error_outside_the_pipeline_never_kills_a_worker(
        settings: Settings, make_pool: Callable[..., WorkerPool],
        monkeypatch: pytest.MonkeyPatch) -> None:
    (settings.upload_path / "good.jpg").write_bytes(jpeg())
    pool = make_pool(WhiteRemover(), threads=1)
    real_claim = pool.claims.claim

    def claim(rel: PurePosixPath) -> Path | None:
        if rel.name == "boom.jpg":
            raise OSError("claim folder unwritable")
        return real_claim(rel)

    monkeypatch.setattr(pool.claims, "claim", claim)
    pool.work.put(P("boom.jpg"))
    pool.work.put(P("good.jpg"))
    wait_for(lambda: pool.done_count == 1, 10, message="the good file finished")

    assert pool.alive() == 1
    assert not pool.work.busy(P("boom.jpg"))


def test_stop_returns_what_is_still_in_flight(settings: Settings,
                                              make_pool: Callable[..., WorkerPool]) -> None:
    (settings.upload_path / "slow.jpg").write_bytes(jpeg())
    remover = HangingRemover()
    pool = make_pool(remover, threads=1)
    pool.work.put(P("slow.jpg"))
    assert remover.entered.wait(10)

    unfinished = pool.stop(0.2)

    assert [job.rel for job in unfinished] == [P("slow.jpg")]
    assert unfinished[0].claimed is not None and unfinished[0].claimed.exists()
    remover.release.set()
    wait_for(lambda: pool.alive() == 0, 10, message="the worker to end")
    assert pool.work.get(timeout=0.01) is None


class Unavailable(WhiteRemover):
    def mask(self, image: Image.Image) -> Image.Image:
        raise RemovalUnavailable("the remote is down (test)")


def test_a_released_file_is_reported_while_its_path_is_still_busy(
        settings: Settings, make_pool: Callable[..., WorkerPool]) -> None:
    (settings.upload_path / "waits.jpg").write_bytes(jpeg())
    pool = make_pool(Unavailable(), threads=1)
    pool.release_hold = 12.5
    reported: list[tuple[PurePosixPath, float, bool]] = []
    pool.on_released.append(lambda rel, hold: reported.append((rel, hold, pool.work.busy(rel))))

    pool.work.put(P("waits.jpg"))
    wait_for(lambda: pool.counts[JobStatus.RELEASED] == 1, 10, message="the release")

    assert reported == [(P("waits.jpg"), 12.5, True)]
    assert (settings.upload_path / "waits.jpg").read_bytes() == jpeg()
    assert pool.done_count == 0
