"""Claims: the atomic rename that lets several daemons share one inbox (SPEC §3.2)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path, PurePosixPath

import pytest

from watcher import claim
from watcher.claim import HEARTBEAT_NAME, STALE_AFTER_SECONDS, Claims, move_no_clobber

P = PurePosixPath
HOST = socket.gethostname()


def claims_for(box: Path, worker_id: str = "me") -> Claims:
    claims = Claims(box, box / ".thumbgen", worker_id)
    claims.setup()
    return claims


def write(path: Path, data: bytes = b"photo") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def foreign_folder(box: Path, name: str, files: dict[str, bytes], beat_age: float | None) -> Path:
    folder = box / ".thumbgen" / "claimed" / name
    folder.mkdir(parents=True)
    for rel, data in files.items():
        write(folder / rel, data)
    if beat_age is not None:
        beat = folder / HEARTBEAT_NAME
        beat.touch()
        when = time.time() - beat_age
        os.utime(beat, (when, when))
    return folder


# -- claim and release -----------------------------------------------------------------------------

def test_claim_moves_the_file_into_my_folder(box: Path) -> None:
    write(box / "camisas" / "azul.jpg", b"blue")
    claims = claims_for(box)

    where = claims.claim(P("camisas/azul.jpg"))

    assert where == box / ".thumbgen" / "claimed" / "me" / "camisas" / "azul.jpg"
    assert where.read_bytes() == b"blue"
    assert not (box / "camisas" / "azul.jpg").exists()
    assert claims.claim(P("camisas/azul.jpg")) is None  # already mine: nothing left to take
    assert claims.claim(P("never.jpg")) is None


def test_a_new_upload_never_replaces_a_claim_of_mine_that_never_finished(box: Path) -> None:
    write(box / "a.jpg", b"first")
    claims = claims_for(box)
    stuck = claims.claim(P("a.jpg"))  # its job failed beyond the pipeline: the file stays here
    write(box / "a.jpg", b"second")

    again = claims.claim(P("a.jpg"))

    assert stuck is not None and again is not None and again != stuck
    assert (stuck.read_bytes(), again.read_bytes()) == (b"first", b"second")
    assert claims.recover() == 2
    assert {p.read_bytes() for p in box.glob("a*.jpg")} == {b"first", b"second"}


def test_the_loser_of_a_claim_gets_none(box: Path) -> None:
    write(box / "a.jpg")
    first, second = claims_for(box, "one"), claims_for(box, "two")

    assert first.claim(P("a.jpg")) is not None
    assert second.claim(P("a.jpg")) is None
    assert not (second.mine / "a.jpg").exists()


def test_claim_keeps_links_and_fifos_as_they_are(box: Path) -> None:
    os.symlink("/etc/passwd", box / "link.jpg")
    os.mkfifo(box / "fifo.jpg")
    claims = claims_for(box)

    link, fifo = claims.claim(P("link.jpg")), claims.claim(P("fifo.jpg"))

    assert link is not None and link.is_symlink()
    assert fifo is not None and not fifo.is_file() and fifo.exists()


def test_release_puts_the_file_back(box: Path) -> None:
    write(box / "sub" / "a.jpg", b"one")
    claims = claims_for(box)
    claimed = claims.claim(P("sub/a.jpg"))
    assert claimed is not None

    back = claims.release(claimed, P("sub/a.jpg"))

    assert back == box / "sub" / "a.jpg"
    assert back.read_bytes() == b"one"
    assert not claimed.exists()


def test_release_never_overwrites_a_file_that_reappeared(box: Path) -> None:
    write(box / "a.jpg", b"old")
    claims = claims_for(box)
    claimed = claims.claim(P("a.jpg"))
    assert claimed is not None
    write(box / "a.jpg", b"new upload")  # the shop dropped a new version meanwhile

    back = claims.release(claimed, P("a.jpg"))

    assert (box / "a.jpg").read_bytes() == b"new upload"
    assert back == box / "a (2).jpg"
    assert back.read_bytes() == b"old"
    write(box / "a.jpg", b"third")
    claimed = claims.claim(P("a.jpg"))
    assert claimed is not None
    write(box / "a.jpg", b"fourth")
    assert claims.release(claimed, P("a.jpg")) == box / "a (3).jpg"


def test_release_never_overwrites_a_file_that_lands_during_the_release(
        box: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shop's upload lands between the check for a free name and the rename."""
    write(box / "a.jpg", b"old")
    claims = claims_for(box)
    claimed = claims.claim(P("a.jpg"))
    assert claimed is not None
    real_free_name = claim.free_name
    raced: list[Path] = []

    def free_name_then_upload(target: Path) -> Path:
        name = real_free_name(target)
        if not raced:
            raced.append(name)
            write(name, b"uploaded just now")
        return name

    monkeypatch.setattr(claim, "free_name", free_name_then_upload)

    back = claims.release(claimed, P("a.jpg"))

    assert (box / "a.jpg").read_bytes() == b"uploaded just now"
    assert back != box / "a.jpg"
    assert back.read_bytes() == b"old"


def test_move_no_clobber_moves_links_and_fifos(tmp_path: Path) -> None:
    os.symlink("nowhere", tmp_path / "link")
    os.mkfifo(tmp_path / "fifo")
    write(tmp_path / "out" / "link", b"taken")

    link = move_no_clobber(tmp_path / "link", tmp_path / "out" / "link")
    fifo = move_no_clobber(tmp_path / "fifo", tmp_path / "out" / "deeper" / "fifo")

    assert link == tmp_path / "out" / "link (2)" and link.is_symlink()
    assert (tmp_path / "out" / "link").read_bytes() == b"taken"
    assert fifo == tmp_path / "out" / "deeper" / "fifo" and not fifo.is_file()


# -- two processes, one inbox ----------------------------------------------------------------------

RACER = """
import json, sys, time
from pathlib import Path, PurePosixPath
from watcher.claim import Claims

box, worker, go, count = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
claims = Claims(box, box / ".thumbgen", worker)
claims.setup()
rels = [PurePosixPath(f"sub{n % 7}/{n:04}.jpg") for n in range(count)]
print("ready", flush=True)
while not go.exists():  # spin: both start within microseconds of each other
    pass
won = []
for rel in rels:
    if claims.claim(rel) is not None:
        won.append(str(rel))
    pause = time.perf_counter() + 0.0005  # keep pace: a start up to ~0.25 s late still meets
                                          # the other racer (seen: one parked that long)
    while time.perf_counter() < pause:
        pass
print(json.dumps(won), flush=True)
"""


def race(box: Path, go: Path, count: int, tag: str) -> list[set[str]]:
    """Two processes claim the same files in the same order; returns what each won."""
    for n in range(count):
        write(box / f"sub{n % 7}" / f"{n:04}.jpg", str(n).encode())
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(box), f"{tag}-{k}", str(go),
                                str(count)], stdout=subprocess.PIPE, text=True)
              for k in range(2)]
    for racer in racers:  # both waiting at the line before the start
        assert racer.stdout is not None and racer.stdout.readline().strip() == "ready"
    go.touch()
    results = []
    for racer in racers:
        out, _ = racer.communicate(timeout=60)
        assert racer.returncode == 0
        results.append(set(json.loads(out)))
    go.unlink()
    return results


def test_two_processes_claim_each_of_500_files_exactly_once(box: Path, tmp_path: Path) -> None:
    count = 500
    everything = {f"sub{n % 7}/{n:04}.jpg" for n in range(count)}
    for attempt in range(8):  # a process the kernel parks at the start line can lose them all
        tag = f"try{attempt}"
        results = race(box, tmp_path / "go", count, tag)
        assert results[0] | results[1] == everything
        assert not results[0] & results[1]
        for k, won in enumerate(results):
            folder = box / ".thumbgen" / "claimed" / f"{tag}-{k}"
            on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*.jpg")}
            assert on_disk == won
            for rel in won:
                assert (folder / rel).read_bytes() == str(int(rel[-8:-4])).encode()
        assert not [p for p in box.rglob("*.jpg") if ".thumbgen" not in p.parts]
        if all(results):
            break
    else:
        pytest.fail("in eight races one process always won everything: no race happened")


# -- recovery --------------------------------------------------------------------------------------

def test_recover_returns_my_own_leftovers(box: Path) -> None:
    write(box / ".thumbgen" / "claimed" / "me" / "sub" / "a.jpg", b"left")
    claims = claims_for(box)

    assert claims.recover(include_mine=False) == 0
    assert claims.recover() == 1
    assert (box / "sub" / "a.jpg").read_bytes() == b"left"
    assert claims.mine.is_dir()  # my folder stays, with its heartbeat
    assert (claims.mine / HEARTBEAT_NAME).exists()


def test_recover_returns_the_claims_of_a_dead_process_on_this_host(box: Path) -> None:
    folder = foreign_folder(box, f"{HOST}-{dead_pid()}",
                            {"a.jpg": b"a", "deep/er/b.jpg": b"b"}, beat_age=0)
    claims = claims_for(box)

    assert claims.recover() == 2
    assert (box / "a.jpg").read_bytes() == b"a"
    assert (box / "deep" / "er" / "b.jpg").read_bytes() == b"b"
    assert not folder.exists()


def test_recover_keeps_the_claims_of_a_live_process_on_this_host(box: Path) -> None:
    folder = foreign_folder(box, f"{HOST}-{os.getppid()}", {"a.jpg": b"a"}, beat_age=10)
    claims = claims_for(box)

    assert claims.recover() == 0
    assert (folder / "a.jpg").exists()
    assert not (box / "a.jpg").exists()


def test_recover_returns_claims_of_a_reused_pid_whose_heartbeat_is_stale(box: Path) -> None:
    # containers restart with small pids: a live pid is no proof the old daemon still runs
    folder = foreign_folder(box, f"{HOST}-{os.getppid()}", {"a.jpg": b"a"},
                            beat_age=10 * STALE_AFTER_SECONDS)
    claims = claims_for(box)

    assert claims.recover() == 1
    assert (box / "a.jpg").read_bytes() == b"a"
    assert not folder.exists()


def test_recover_returns_a_foreign_host_claim_once_its_heartbeat_is_stale(box: Path) -> None:
    fresh = foreign_folder(box, "other-host-4242", {"fresh.jpg": b"f"}, beat_age=10)
    stale = foreign_folder(box, "gone-host-4242", {"stale.jpg": b"s"},
                           beat_age=STALE_AFTER_SECONDS + 60)
    named = foreign_folder(box, "replica-b", {"named.jpg": b"n"},
                           beat_age=STALE_AFTER_SECONDS + 60)
    claims = claims_for(box)

    assert claims.recover() == 2
    assert (fresh / "fresh.jpg").exists()
    assert (box / "stale.jpg").read_bytes() == b"s"
    assert (box / "named.jpg").read_bytes() == b"n"
    assert not stale.exists() and not named.exists()


def test_recover_never_overwrites_what_is_in_the_inbox(box: Path) -> None:
    foreign_folder(box, f"{HOST}-{dead_pid()}", {"a.jpg": b"claimed"}, beat_age=0)
    write(box / "a.jpg", b"new upload")
    claims = claims_for(box)

    assert claims.recover() == 1
    assert (box / "a.jpg").read_bytes() == b"new upload"
    assert (box / "a (2).jpg").read_bytes() == b"claimed"


def test_recover_returns_claimed_links_and_fifos(box: Path, tmp_path: Path) -> None:
    folder = foreign_folder(box, f"{HOST}-{dead_pid()}", {}, beat_age=0)
    (tmp_path / "a-folder").mkdir()
    os.symlink(tmp_path / "a-folder", folder / "folder-link.jpg")
    os.symlink("/etc/passwd", folder / "file-link.jpg")
    os.mkfifo(folder / "fifo.jpg")
    claims = claims_for(box)

    assert claims.recover() == 3
    assert (box / "folder-link.jpg").is_symlink()
    assert (box / "file-link.jpg").is_symlink()
    assert (box / "fifo.jpg").exists()
    assert not folder.exists()
    assert (tmp_path / "a-folder").is_dir()  # the link was moved, never followed


def test_heartbeat_recreates_a_removed_folder(box: Path) -> None:
    claims = claims_for(box)
    (claims.mine / HEARTBEAT_NAME).unlink()
    claims.mine.rmdir()

    claims.heartbeat()

    assert (claims.mine / HEARTBEAT_NAME).exists()


def test_close_removes_my_folder_only_when_it_holds_no_claim(box: Path) -> None:
    write(box / "loja" / "a.jpg", b"a")
    claims = claims_for(box)
    claims.setup()
    claimed = claims.claim(P("loja/a.jpg"))
    assert claimed is not None

    assert claims.close() is False  # a claim is still in it: folder and heartbeat stay
    assert (claims.mine / HEARTBEAT_NAME).is_file()
    claims.release(claimed, P("loja/a.jpg"))
    assert claims.close() is True
    assert not claims.mine.exists()
    assert (box / "loja" / "a.jpg").read_bytes() == b"a"


def test_owns_is_false_once_the_claim_was_taken_back_even_if_reclaimed_at_the_same_path(
        tmp_path: Path) -> None:
    """The fence: another daemon returning our file to the inbox (and anyone claiming it again,
    even into the same path) ends our claim."""
    box = tmp_path / "produtos"
    box.mkdir()
    (box / "a.jpg").write_bytes(b"photo")
    mine = Claims(box, box / ".thumbgen", "node-p", lease=5)
    mine.setup()
    claimed = mine.claim(PurePosixPath("a.jpg"))
    assert claimed is not None
    claim_id = mine.identity(claimed)
    assert mine.owns(claimed, claim_id)
    assert not mine.owns(claimed, None)

    mine.release(claimed, PurePosixPath("a.jpg"))  # what another daemon's recover() does
    assert not mine.owns(claimed, claim_id)
    again = mine.claim(PurePosixPath("a.jpg"))
    assert again == claimed and os.path.exists(again)
    assert not mine.owns(claimed, claim_id), "a new claim of the same file is not the old one"
    assert mine.owns(again, mine.identity(again))


def test_the_lease_decides_when_a_silent_owner_is_gone(tmp_path: Path) -> None:
    box = tmp_path / "produtos"
    box.mkdir()
    (box / "a.jpg").write_bytes(b"photo")
    other = Claims(box, box / ".thumbgen", "elsewhere-1")
    other.setup()
    assert other.claim(PurePosixPath("a.jpg")) is not None
    beat = other.mine / HEARTBEAT_NAME
    old = time.time() - 10
    os.utime(beat, (old, old))
    patient = Claims(box, box / ".thumbgen", "node-q", lease=60)
    assert patient.recover(include_mine=False) == 0
    short = Claims(box, box / ".thumbgen", "node-q", lease=5)
    assert short.heartbeat_interval == 1.25
    assert short.recover(include_mine=False) == 1
    assert (box / "a.jpg").read_bytes() == b"photo"
