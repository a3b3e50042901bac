"""The scan thread and the settle table's windows: a backlog of thousands on a real folder is held
a window per shop, and every file is still handed over once, oldest first within its shop."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest

from tests.e2e.conftest import wait_for
from watcher import rescans as rescans_mod
from watcher import settle as settle_mod
from watcher.settle import Settler
from watcher.rescans import Rescans

WINDOW = 50


def never_busy(rel: PurePosixPath) -> bool:
    return False


def make(path: Path, mtime: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    os.utime(path, ns=(mtime * 10**9, mtime * 10**9))


@pytest.fixture
def scans(box: Path) -> Iterator[tuple[Settler, Rescans]]:
    settler = Settler(box, 0, window=WINDOW)
    scanner = Rescans(box, settler, never_busy)
    scanner.start()
    yield settler, scanner
    scanner.stop()


def settle(scanner: Rescans) -> None:
    wait_for(scanner.idle, 10, message="the scans asked for to finish")


def test_a_backlog_is_held_a_window_per_shop_and_every_file_is_taken_once_oldest_first(
        box: Path, scans: tuple[Settler, Rescans], tmp_path: Path) -> None:
    settler, scanner = scans
    # mtimes in the reverse of the names' order, and shuffled across folders
    expected: dict[str, list[str]] = {"loja-a": [], "loja-b": [], "": []}
    for n in range(1200):
        for shop in ("loja-a", "loja-b"):
            rel = f"{shop}/f{n % 7}/{n:04}.jpg"
            make(box / rel, 10_000 - n)
            expected[shop].insert(0, rel)
    for n in range(30):
        make(box / f"top{n:02}.jpg", 100 + n)
        expected[""].append(f"top{n:02}.jpg")

    scanner.full("start-up")
    settle(scanner)
    assert len(settler) <= 3 * WINDOW  # not 2 430: the rest waits on disk, counted
    assert settler.waiting() == 2430

    done = tmp_path / "done"
    taken: dict[str, list[str]] = {"loja-a": [], "loja-b": [], "": []}
    held = 0
    while True:
        out = settler.ready(40, never_busy)
        refills = settler.refills()
        if not out and not refills and scanner.idle():
            break
        for rel in out:  # claimed by a worker: the file leaves the inbox
            (done / rel).parent.mkdir(parents=True, exist_ok=True)
            os.rename(box / rel, done / rel)
            taken[rel.parts[0] if len(rel.parts) > 1 else ""].append(str(rel))
        if len(taken["loja-a"]) == 600 and not (box / "loja-a/late.jpg").exists():
            make(box / "loja-a/late.jpg", 20_000)  # no event: only a refill can find it
            expected["loja-a"].append("loja-a/late.jpg")
        scanner.lanes(refills)
        settle(scanner)
        held = max(held, len(settler))

    for shop in expected:
        assert len(taken[shop]) == len(expected[shop]), shop
        assert taken[shop] == expected[shop], [(n, a, b) for n, (a, b) in enumerate(zip(taken[shop], expected[shop])) if a != b][:5]
    assert held <= 3 * WINDOW
    assert settler.waiting() == len(settler) == 0


def test_files_turned_away_while_their_shop_is_scanned_are_found_by_the_next_scan(
        box: Path, scans: tuple[Settler, Rescans], monkeypatch: pytest.MonkeyPatch) -> None:
    settler, scanner = scans
    for n in range(2 * WINDOW):
        make(box / "loja" / f"{n:04}.jpg", 1000 + n)
    listed, go_on = threading.Event(), threading.Event()
    real = rescans_mod.oldest_in_lane

    def slow_scan(inbox: Path, lane: str, count: int) -> tuple[list[tuple[int, str, int]], int]:
        found = real(inbox, lane, count)
        listed.set()
        assert go_on.wait(10)
        return found

    monkeypatch.setattr(rescans_mod, "oldest_in_lane", slow_scan)
    scanner.full("start-up")
    assert listed.wait(10)
    for n in range(3 * WINDOW):  # events while the shop is being scanned, after its listing
        make(box / "loja" / f"new{n:04}.jpg", 5000 + n)
        settler.suggest(PurePosixPath(f"loja/new{n:04}.jpg"))
    go_on.set()
    settle(scanner)
    monkeypatch.setattr(rescans_mod, "oldest_in_lane", real)

    taken: list[str] = []
    deadline = time.monotonic() + 20
    while len(taken) < 5 * WINDOW and time.monotonic() < deadline:
        for rel in settler.ready(WINDOW, never_busy):
            os.unlink(box / rel)
            taken.append(rel.name)
        scanner.lanes(settler.refills())
        settle(scanner)

    assert not os.listdir(box / "loja")
    assert len(taken) == 5 * WINDOW and taken == sorted(taken)  # all of them, oldest first


def test_a_full_shop_turns_suggestions_away_without_an_lstat_or_a_double_count(
        box: Path, scans: tuple[Settler, Rescans], monkeypatch: pytest.MonkeyPatch) -> None:
    """A poll on a share suggests a changed folder's every file again, each time: past a full
    window they wait for the shop's next scan, costing neither an lstat nor the count."""
    settler, scanner = scans
    names = [f"loja/{n:04}.jpg" for n in range(3 * WINDOW)]
    for n, rel in enumerate(names):
        make(box / rel, 1000 + n)
    scanner.full("start-up")
    settle(scanner)
    stats = 0
    real_lstat = os.lstat

    def counting_lstat(path: object, *args: object, **kwargs: object) -> os.stat_result:
        nonlocal stats
        stats += 1
        return real_lstat(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(settle_mod.os, "lstat", counting_lstat)
    for _ in range(3):  # three polls
        for rel in names:
            settler.suggest(PurePosixPath(rel))
        settler.ready(0, never_busy)

    assert stats == 0
    assert len(settler) == WINDOW and settler.waiting() == 3 * WINDOW


def test_a_path_queued_for_a_worker_does_not_make_its_shop_scan_again_and_again(
        box: Path) -> None:
    for n in range(5):
        make(box / "loja" / f"{n}.jpg", 1000 + n)
    settler = Settler(box, 0, window=WINDOW)
    scanner = Rescans(box, settler, lambda rel: rel.name == "0.jpg")  # queued, not claimed yet
    scanner.start()
    try:
        scanner.full("start-up")
        settle(scanner)
    finally:
        scanner.stop()

    assert len(settler) == 4 and settler.waiting() == 4
    assert settler.refills() == []  # the scan found all there is
