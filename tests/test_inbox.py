"""What counts as an input (SPEC §2) and when it is ready (the settle rule of SPEC §3.1)."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import pytest

from watcher import settle
from watcher.inbox import is_ignored_name, relative_input
from watcher.settle import Settler
from watcher.scan import scan

P = PurePosixPath
SETTLE = 2.0


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def never_busy(rel: PurePosixPath) -> bool:
    return False


@pytest.fixture
def clock() -> Clock:
    return Clock()


def write(path: Path, data: bytes = b"x" * 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# -- ignore rules ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", [
    ".hidden.jpg", "_draft.jpg", ".thumbgen", "_processados", "_falhas",
    "photo.jpg.part", "PHOTO.JPG.PART", "photo.crdownload", "photo.Crdownload", "scan.tmp",
    "scan.TMP", "~$report.docx", "~$photo.jpg", ".~lock.photo.jpg#", ".DS_Store", ".ds_store",
    "Thumbs.db", "thumbs.db", "THUMBS.DB", "desktop.ini", "Desktop.ini",
])
def test_ignored_names(name: str) -> None:
    assert is_ignored_name(name)


@pytest.mark.parametrize("name", [
    "photo.jpg", "Photo.JPG", "a.png", "my_photo.jpg", "photo.partial.jpg", "part.jpg",
    "tmp.jpg", "x.jpg.tmp.jpg", "a~$b.jpg", "thumbs.db.jpg", "desktop.ini.png", "1.webp",
    "sem nome (2).jpg", "ção.jpg",
])
def test_names_that_are_inputs(name: str) -> None:
    assert not is_ignored_name(name)


def test_relative_input_keeps_the_relative_path(box: Path) -> None:
    assert relative_input(box, box / "a.jpg") == P("a.jpg")
    assert relative_input(box, box / "camisas" / "azul" / "a.jpg") == P("camisas/azul/a.jpg")
    assert relative_input(box, str(box / "sub" / ".." / "b.jpg")) == P("b.jpg")


@pytest.mark.parametrize("rel", [
    "_processados/a.jpg", "_falhas/sub/a.jpg", ".thumbgen/claimed/w/a.jpg", "sub/.cache/a.jpg",
    "sub/_old/a.jpg", "sub/a.jpg.part", "sub/~$a.jpg", "sub/.DS_Store", "a/b/Thumbs.db",
])
def test_relative_input_ignores_any_ignored_part(box: Path, rel: str) -> None:
    assert relative_input(box, box / rel) is None


def test_relative_input_refuses_what_is_outside_or_the_inbox_itself(box: Path) -> None:
    assert relative_input(box, box.parent / "elsewhere.jpg") is None
    assert relative_input(box, box.parent / "produtos-old" / "a.jpg") is None
    assert relative_input(box, box / ".." / "a.jpg") is None
    assert relative_input(box, box) is None


# -- the settle rule -------------------------------------------------------------------------------

def test_a_file_is_ready_once_unchanged_for_settle_seconds(box: Path, clock: Clock) -> None:
    write(box / "a.jpg")
    settler = Settler(box, SETTLE, clock)
    settler.suggest(P("a.jpg"))

    assert settler.ready(10, never_busy) == []  # first look: size and mtime noted
    clock.advance(SETTLE - 0.01)
    assert settler.ready(10, never_busy) == []
    clock.advance(0.01)
    assert settler.ready(10, never_busy) == [P("a.jpg")]
    assert len(settler) == 0
    assert settler.ready(10, never_busy) == []  # handed over once


def test_a_growing_file_is_not_ready(box: Path, clock: Clock) -> None:
    path = write(box / "big.jpg", b"\xff\xd8" + b"x" * 1000)
    settler = Settler(box, SETTLE, clock)
    settler.suggest(P("big.jpg"))
    assert settler.ready(10, never_busy) == []

    for _ in range(5):  # still uploading: each look sees more bytes
        with path.open("ab") as fh:
            fh.write(b"y" * 1000)
        clock.advance(SETTLE)
        assert settler.ready(10, never_busy) == []

    clock.advance(SETTLE - 0.5)
    assert settler.ready(10, never_busy) == []  # the writer stopped: the window starts again
    clock.advance(0.5)
    assert settler.ready(10, never_busy) == [P("big.jpg")]


def test_an_overwrite_of_the_same_size_restarts_the_window(box: Path, clock: Clock) -> None:
    path = write(box / "a.jpg", b"1" * 100)
    settler = Settler(box, SETTLE, clock)
    settler.suggest(P("a.jpg"))
    settler.ready(10, never_busy)

    st = path.stat()
    path.write_bytes(b"2" * 100)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    clock.advance(SETTLE)
    assert settler.ready(10, never_busy) == []
    clock.advance(SETTLE)
    assert settler.ready(10, never_busy) == [P("a.jpg")]


def test_settle_zero_hands_files_over_at_the_first_look(box: Path, clock: Clock) -> None:
    write(box / "a.jpg")
    settler = Settler(box, 0, clock)
    settler.suggest(P("a.jpg"))

    assert settler.ready(10, never_busy) == [P("a.jpg")]


def test_a_busy_path_is_skipped_and_kept(box: Path, clock: Clock) -> None:
    write(box / "a.jpg")
    write(box / "b.jpg")
    settler = Settler(box, 0, clock)
    settler.suggest(P("a.jpg"))
    settler.suggest(P("b.jpg"))
    busy = {P("a.jpg")}

    assert settler.ready(10, busy.__contains__) == [P("b.jpg")]
    assert len(settler) == 1
    busy.clear()
    assert settler.ready(10, busy.__contains__) == [P("a.jpg")]


def test_vanished_paths_and_folders_are_dropped(box: Path, clock: Clock) -> None:
    path = write(box / "a.jpg")
    (box / "folder").mkdir()
    settler = Settler(box, SETTLE, clock)
    for name in ("a.jpg", "never-there.jpg", "folder"):
        settler.suggest(P(name))

    assert settler.ready(10, never_busy) == []
    assert len(settler) == 1  # only a.jpg is left to watch
    path.unlink()
    clock.advance(SETTLE)
    assert settler.ready(10, never_busy) == []
    assert len(settler) == 0


def test_suggesting_twice_holds_the_path_once(box: Path, clock: Clock) -> None:
    write(box / "a.jpg")
    settler = Settler(box, SETTLE, clock)
    for _ in range(3):
        settler.suggest(P("a.jpg"))
    assert len(settler) == 1
    settler.forget(P("a.jpg"))
    assert len(settler) == 0


def test_ready_returns_at_most_limit(box: Path, clock: Clock) -> None:
    for n in range(10):
        write(box / f"{n}.jpg")
    settler = Settler(box, 0, clock)
    for n in range(10):
        settler.suggest(P(f"{n}.jpg"))

    first = settler.ready(4, never_busy)
    assert len(first) == 4
    rest = settler.ready(100, never_busy)
    assert sorted(first + rest) == sorted(P(f"{n}.jpg") for n in range(10))


def test_ten_thousand_paths_are_not_all_statted_every_tick(box: Path, clock: Clock,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Each path is looked at once on arrival and once when due; a tick does work for what it
    hands over, not for everything that waits (``busy`` is asked only about paths handed over)."""
    names = [P(f"f{n:05}.jpg") for n in range(10_000)]
    for rel in names:
        (box / rel).write_bytes(b"x")
    stats = asked = 0
    real_lstat = os.lstat

    def counting_lstat(path: object, *args: object, **kwargs: object) -> os.stat_result:
        nonlocal stats
        stats += 1
        return real_lstat(path, *args, **kwargs)  # type: ignore[arg-type]

    def counting_busy(rel: PurePosixPath) -> bool:
        nonlocal asked
        asked += 1
        return False

    monkeypatch.setattr(settle.os, "lstat", counting_lstat)
    settler = Settler(box, SETTLE, clock, window=len(names))  # no lane window: every path held
    for rel in names:
        settler.suggest(rel)

    def tick(limit: int = 8) -> tuple[int, int, list[PurePosixPath]]:
        nonlocal stats, asked
        stats = asked = 0
        out = settler.ready(limit, counting_busy)
        clock.advance(0.1)
        return stats, asked, out

    first_looks = 0
    while first_looks < len(names):  # arrivals: looked at once each, a bounded number per tick
        statted, busy_asked, out = tick()
        assert out == [] and 0 < statted <= Settler.STAT_BUDGET and busy_asked == 0
        first_looks += statted
    assert first_looks == len(names)
    while clock.now < 1000.0 + SETTLE:  # inside the settle window: nothing to do, nothing done
        assert tick() == (0, 0, [])
    handed: list[PurePosixPath] = []
    for _ in range(50):
        statted, busy_asked, out = tick(limit=8)
        assert statted == busy_asked == len(out) == 8  # the queue takes 8: 8 looked at
        handed += out
    clock.advance(SETTLE)
    while len(settler):
        statted, _, out = tick(limit=len(names))
        assert statted == len(out) <= Settler.STAT_BUDGET
        handed += out
    assert sorted(handed) == names


def test_a_busy_path_costs_nothing_until_it_is_due_again(box: Path, clock: Clock) -> None:
    write(box / "a.jpg")
    settler = Settler(box, SETTLE, clock)
    settler.suggest(P("a.jpg"))
    asked: list[PurePosixPath] = []

    def busy(rel: PurePosixPath) -> bool:
        asked.append(rel)
        return True

    assert settler.ready(10, busy) == []  # first look
    clock.advance(SETTLE)
    assert settler.ready(10, busy) == []  # settled, but busy: held a settle period
    for _ in range(int(SETTLE / 0.1) - 1):
        clock.advance(0.1)
        settler.ready(10, busy)
    assert asked == [P("a.jpg")]
    clock.advance(0.1)
    assert settler.ready(10, never_busy) == [P("a.jpg")]


def test_a_forgotten_then_suggested_path_is_handed_over_once(box: Path, clock: Clock) -> None:
    write(box / "a.jpg")
    settler = Settler(box, 0, clock)
    settler.suggest(P("a.jpg"))
    settler.forget(P("a.jpg"))
    settler.suggest(P("a.jpg"))

    assert settler.ready(10, never_busy) == [P("a.jpg")]
    assert settler.ready(10, never_busy) == []
    assert len(settler) == 0


def test_defer_holds_a_path_back_without_holding_up_the_others(box: Path, clock: Clock) -> None:
    write(box / "waits.jpg")
    write(box / "new.jpg")
    settler = Settler(box, 0, clock)
    settler.suggest(P("waits.jpg"))
    settler.defer(P("waits.jpg"), 30)
    settler.suggest(P("new.jpg"))

    assert settler.ready(10, never_busy) == [P("new.jpg")]
    clock.advance(29.9)
    assert settler.ready(10, never_busy) == []
    clock.advance(0.1)
    assert settler.ready(10, never_busy) == [P("waits.jpg")]


def test_a_path_deferred_while_busy_is_not_handed_over_early(box: Path, clock: Clock) -> None:
    """A worker releases a file (remote down) while its path is still busy; the event of the
    release suggests it again; neither makes it due before the hold ends."""
    write(box / "a.jpg")
    settler = Settler(box, SETTLE, clock)
    settler.defer(P("a.jpg"), 30)
    settler.suggest(P("a.jpg"))
    assert len(settler) == 1

    for _ in range(29):
        clock.advance(1)
        assert settler.ready(10, never_busy) == []
    clock.advance(1)
    assert settler.ready(10, never_busy) == []  # first look at the end of the hold
    clock.advance(SETTLE)
    assert settler.ready(10, never_busy) == [P("a.jpg")]


# -- fairness and order ----------------------------------------------------------------------------

def _aged(path: Path, mtime: int) -> Path:
    write(path)
    os.utime(path, ns=(mtime * 10**9, mtime * 10**9))
    return path


def test_within_a_shop_the_oldest_goes_first_by_mtime_then_name(box: Path, clock: Clock) -> None:
    for name, mtime in (("c.jpg", 100), ("a.jpg", 300), ("b.jpg", 100), ("d.jpg", 200)):
        _aged(box / "loja" / name, mtime)
    settler = Settler(box, 0, clock)
    for name in ("a.jpg", "d.jpg", "c.jpg", "b.jpg"):  # the order events came in is not it
        settler.suggest(P("loja") / name)

    taken = [settler.ready(1, never_busy) for _ in range(4)]

    assert taken == [[P("loja/b.jpg")], [P("loja/c.jpg")], [P("loja/d.jpg")], [P("loja/a.jpg")]]


def test_shops_take_turns_and_the_top_level_is_one_shop(box: Path, clock: Clock) -> None:
    for n in range(3):
        for shop in ("loja-a", "loja-b"):
            _aged(box / shop / f"{n}.jpg", 100 + n)
        _aged(box / f"top{n}.jpg", 100 + n)
    settler = Settler(box, 0, clock)
    for rel in sorted(scan(box)):
        settler.suggest(rel)

    taken = [str(rel) for rel in settler.ready(9, never_busy)]

    assert sorted(taken[:3]) == ["loja-a/0.jpg", "loja-b/0.jpg", "top0.jpg"]
    assert sorted(taken[3:6]) == ["loja-a/1.jpg", "loja-b/1.jpg", "top1.jpg"]
    shop = [t.partition("/")[0] if "/" in t else "" for t in taken]
    assert shop[3:6] == shop[:3] and shop[6:] == shop[:3]  # the same turns, round after round


def test_a_photo_in_an_idle_shop_is_taken_next_whatever_the_backlog(box: Path,
                                                                    clock: Clock) -> None:
    for n in range(1000):
        _aged(box / "loja-a" / f"{n:04}.jpg", 100)
    settler = Settler(box, SETTLE, clock)
    for rel in scan(box):
        settler.suggest(rel, (100, 100 * 10**9))  # as the start-up scan: looked at already
    clock.advance(SETTLE)
    assert [r.parent for r in settler.ready(3, never_busy)] == [P("loja-a")] * 3

    write(box / "loja-b" / "new.jpg")
    settler.suggest(P("loja-b/new.jpg"))
    assert settler.ready(1, never_busy) == [P("loja-a/0003.jpg")]  # new.jpg is looked at
    clock.advance(SETTLE)

    assert settler.ready(1, never_busy) == [P("loja-b/new.jpg")]
    assert settler.ready(1, never_busy) == [P("loja-a/0004.jpg")]


def test_a_scan_look_counts_as_the_first_look(box: Path, clock: Clock) -> None:
    st = os.lstat(write(box / "a.jpg"))
    settler = Settler(box, SETTLE, clock)
    settler.suggest(P("a.jpg"), (st.st_size, st.st_mtime_ns))
    assert settler.ready(10, never_busy) == []
    clock.advance(SETTLE)

    assert settler.ready(10, never_busy) == [P("a.jpg")]


def test_a_shop_waits_for_its_oldest_only_while_it_settles(box: Path, clock: Clock) -> None:
    """An old photo moved in (mv keeps its mtime) goes first once still, without being skipped."""
    _aged(box / "loja" / "new.jpg", 200)
    settler = Settler(box, SETTLE, clock)
    settler.suggest(P("loja/new.jpg"))
    settler.ready(1, never_busy)
    clock.advance(SETTLE - 0.5)
    _aged(box / "loja" / "old.jpg", 100)
    settler.suggest(P("loja/old.jpg"))
    assert settler.ready(1, never_busy) == []
    clock.advance(0.5)
    assert settler.ready(1, never_busy) == []  # old.jpg is the oldest: the shop waits for it
    clock.advance(SETTLE)

    assert settler.ready(2, never_busy) == [P("loja/old.jpg"), P("loja/new.jpg")]
