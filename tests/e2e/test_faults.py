"""Faults that are not the photo's: a daemon that lost its claim, and a broken setup.

- A daemon frozen past its claim lease comes back to find its file taken by another daemon: it
  must drop its result, never publish over the newer thumbnail (issue 9, point 1).
- A fault of the daemon's own setup (the model missing, a folder it cannot write) would fail every
  photo alike: photos wait in the inbox, ``/readyz`` names the cause, the log says it once, and the
  daemon recovers by itself once the cause is gone (issue 9, point 2).

The immutable flag (``chattr +i``) stops even root from writing a folder; setting it needs root.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image

from tests.e2e.conftest import THUMBGEN, Daemon, visible_files, wait_for
from tests.e2e.test_ops import base_url, get, get_json

pytestmark = pytest.mark.e2e

ONCE = "photos wait in the inbox until this is fixed"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _photo(data_dir: Path, name: str, path: Path, size: tuple[int, int]) -> bytes:
    """A real product photo at ``size`` (large: the model's work takes a while)."""
    with Image.open(data_dir / "products" / name) as im:
        im.convert("RGB").resize(size, Image.Resampling.BICUBIC).save(path, quality=90)
    return path.read_bytes()


def _drop(src: bytes, inbox: Path, rel: str) -> None:
    temp = inbox / f".{Path(rel).name}.part"
    temp.write_bytes(src)
    temp.rename(inbox / rel)


# -- 1. fencing ------------------------------------------------------------------------------------

def test_a_daemon_frozen_past_its_lease_drops_its_result_instead_of_overwriting(
        make_daemon: Callable[..., Daemon], data_dir: Path, tmp_path: Path) -> None:
    lease = 3
    p = make_daemon("p", WORKER_ID="node-p", CLAIM_LEASE_SECONDS=lease, WORKERS=1)
    p.start()
    p.wait_started()
    old = _photo(data_dir, "stickers.jpg", tmp_path / "old.jpg", (6000, 4000))
    new = _photo(data_dir, "mugs.jpg", tmp_path / "new.jpg", (1600, 1200))
    claimed = p.inbox / ".thumbgen" / "claimed" / "node-p" / "stickers.jpg"
    thumb = p.output / "stickers.jpg"

    # P claims the old photo and is frozen while it works on it
    _drop(old, p.inbox, "stickers.jpg")
    wait_for(claimed.exists, 30, interval=0.002, message="P to claim stickers.jpg")
    p.send(signal.SIGSTOP)
    try:
        assert claimed.exists() and not thumb.exists(), "P finished before it could be frozen"

        # Q takes the claim back once P's heartbeat is older than the lease, and publishes it;
        # then the shop drops a new photo under the same name, and Q publishes that too
        q = make_daemon("q", WORKER_ID="node-q", CLAIM_LEASE_SECONDS=lease)
        q.start()
        q.wait_started()
        wait_for(lambda: (q.processed / "stickers.jpg").exists(), 60,
                 message="Q to take P's claim back and finish it")
        assert "returned claim of node-p" in q.log()
        _drop(new, q.inbox, "stickers.jpg")
        wait_for(lambda: (q.processed / "stickers (2).jpg").exists(), 60,
                 message="Q to finish the new photo")
        newest = _sha(thumb)
    finally:
        p.send(signal.SIGCONT)

    wait_for(lambda: "stickers.jpg dropped" in p.log(), 60,
             message="P to notice it lost its claim; log:\n" + p.log()[-3000:])
    time.sleep(0.5)
    assert _sha(thumb) == newest, "the stalled daemon overwrote the newer thumbnail"
    assert "lost its claim" in p.log()
    assert "unexpected error" not in p.log() + q.log()
    assert visible_files(p.failed) == []
    kept = {path.read_bytes() for path in visible_files(p.processed)}
    assert kept == {old, new}, "an original was lost or duplicated"
    assert not claimed.exists()
    p_url = re.search(r"HTTP server on (http://\S+)", p.log())
    assert p_url is not None
    status, body = get(p_url.group(1) + "/metrics")
    assert status == 200 and b"thumbgen_claims_lost_total 1.0" in body
    assert p.stop() == 0 and q.stop() == 0


# -- 2. faults of the setup ------------------------------------------------------------------------

@pytest.fixture
def immutable() -> Iterator[Callable[[Path], None]]:
    """``immutable(folder)``: nobody, root included, can create or rename anything in it (until
    the end of the test)."""
    if os.geteuid() != 0 or shutil.which("chattr") is None:
        pytest.skip("needs root and chattr to lock a folder against root")
    locked: list[Path] = []

    def lock(folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(["chattr", "+i", str(folder)], check=True)
        locked.append(folder)

    yield lock
    for folder in locked:
        subprocess.run(["chattr", "-i", str(folder)], check=False)


def _unlock(folder: Path) -> None:
    subprocess.run(["chattr", "-i", str(folder)], check=True)


def _waits(d: Daemon, names: list[str], seconds: float) -> None:
    """Each photo is back in the inbox (one in work when the fault struck finishes its render
    first: slow on a busy machine), then stays there for ``seconds`` (several settle and rescan
    periods); nothing goes to _falhas/."""
    wait_for(lambda: all((d.inbox / name).exists() for name in names), 120,
             message="the photos back in the inbox:\n" + d.log()[-3000:])
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert visible_files(d.failed) == [], "a good photo was rejected:\n" + d.log()[-3000:]
        time.sleep(0.2)
    for name in names:
        assert (d.inbox / name).exists(), f"{name} left the inbox:\n" + d.log()[-3000:]


@contextmanager
def _not_ready_naming(url: str, *words: str) -> Iterator[dict[str, object]]:
    status, doc = get_json(url + "/readyz")
    assert status == 503, doc
    text = " ".join(doc["problems"])  # type: ignore[arg-type]
    for word in words:
        assert word in text, (word, doc)
    yield doc


def test_a_missing_model_makes_photos_wait_and_the_daemon_recovers_by_itself(
        make_daemon: Callable[..., Daemon], data_dir: Path, tmp_path: Path,
        model_path: Path) -> None:
    missing = tmp_path / "models" / "u2netp.onnx"
    d = make_daemon(MODEL_PATH=str(missing))
    d.start()
    d.wait_started()
    url = base_url(d)
    with _not_ready_naming(url, str(missing), "thumbgen models fetch"):
        pass
    names = ["books.jpg", "mugs.jpg"]
    for name in names:
        _drop((data_dir / "products" / name).read_bytes(), d.inbox, name)
    _waits(d, names, 3)
    status, doc = get_json(url + "/health")
    assert status == 503
    fault, = doc["checks"]["application"]["faults"]
    assert fault["cause"] == "model" and "thumbgen models fetch" in fault["fix"]
    assert get(url + "/livez")[0] == 200  # a restart would not bring the model back
    diagnose = subprocess.run([THUMBGEN, "diagnose"], cwd=d.base, env=d.env,
                              capture_output=True, text=True, timeout=120)
    assert f"{missing} is missing" in diagnose.stdout and "thumbgen models fetch" in \
        diagnose.stdout

    missing.parent.mkdir()
    shutil.copyfile(model_path, missing)  # the operator fixes it; nobody restarts the daemon
    wait_for(lambda: all((d.output / name).exists() for name in names), 30,
             message="thumbnails after the model came back; log:\n" + d.log()[-3000:])
    assert get(url + "/readyz")[0] == 200
    assert d.log().count(ONCE) == 1, "the fault is logged once, not once per photo"
    assert "unexpected error" not in d.log()
    assert d.stop() == 0


def test_a_damaged_model_is_found_at_start_up_not_by_the_first_photo(
        make_daemon: Callable[..., Daemon], tmp_path: Path, model_path: Path) -> None:
    damaged = tmp_path / "u2netp.onnx"
    damaged.write_bytes(model_path.read_bytes()[:100_000])
    d = make_daemon(MODEL_PATH=str(damaged))
    d.start()
    d.wait_started()
    with _not_ready_naming(base_url(d), str(damaged), "cannot be loaded",
                           "thumbgen models fetch"):
        pass
    assert d.stop() == 0


@pytest.mark.parametrize("role", ["output", "processed", "failed"])
def test_a_folder_the_daemon_cannot_write_makes_photos_wait_not_fail(
        make_daemon: Callable[..., Daemon], data_dir: Path, immutable: Callable[[Path], None],
        role: str) -> None:
    d = make_daemon()
    folder = {"output": d.output, "processed": d.processed, "failed": d.failed}[role]
    d.start()
    d.wait_started()
    url = base_url(d)
    assert get(url + "/readyz")[0] == 200
    immutable(folder)
    # a photo for output and processed; a file that is no photo for _falhas/
    names = ["notas.jpg"] if role == "failed" else ["books.jpg", "mugs.jpg"]
    for name in names:
        data = (b"this is a shopping list, not a photo\n" if role == "failed"
                else (data_dir / "products" / name).read_bytes())
        _drop(data, d.inbox, name)
    wait_for(lambda: ONCE in d.log(), 30, message="the fault in the log:\n" + d.log()[-3000:])
    _waits(d, names, 3)
    with _not_ready_naming(url, str(folder), "cannot be written"):
        pass
    assert d.log().count(ONCE) == 1, "the fault is logged once, not once per photo"
    assert "kind: unexpected" not in d.log() and "unexpected error" not in d.log()
    diagnose = subprocess.run([THUMBGEN, "diagnose"], cwd=d.base, env=d.env,
                              capture_output=True, text=True, timeout=120)
    line = next(line for line in diagnose.stdout.splitlines() if str(folder) in line)
    assert "FAIL" in line and "chattr -i" in diagnose.stdout, diagnose.stdout

    _unlock(folder)  # fixed: the daemon notices within a rescan (2 s here)
    if role == "failed":
        wait_for(lambda: (d.failed / "notas.jpg.erro.txt").exists(), 30,
                 message="the rejection once _falhas/ takes writes again")
        assert "not_a_photo" in (d.failed / "notas.jpg.erro.txt").read_text()
    else:
        wait_for(lambda: all((d.processed / name).exists() for name in names), 30,
                 message="the photos once the folder takes writes again:\n" + d.log()[-3000:])
        assert all((d.output / name).exists() for name in names)
    assert get(url + "/readyz")[0] == 200
    assert "fixed after" in d.log()
    assert d.stop() == 0


# -- 3. a claim that fails for one folder of the inbox only ----------------------------------------

HELD = "wait there until this is fixed (the other folders go on)"


def _held(url: str, folder: Path) -> dict[str, object]:
    """The daemon stays ready; /health is degraded and names ``folder``."""
    assert get(url + "/readyz")[0] == 200
    status, doc = get_json(url + "/health")
    assert status == 200 and doc["status"] == "degraded", doc
    application = doc["checks"]["application"]
    assert application["faults"] == [] and application["ready"] is True, application
    held, = application["held_folders"]
    assert held["folder"] == str(folder), held
    return held  # type: ignore[no-any-return]


def test_a_shop_folder_the_daemon_cannot_write_holds_only_its_own_photos(
        make_daemon: Callable[..., Daemon], data_dir: Path,
        immutable: Callable[[Path], None]) -> None:
    d = make_daemon()
    shop = d.inbox / "loja-a"
    shop.mkdir()
    _drop((data_dir / "products" / "books.jpg").read_bytes(), shop, "books.jpg")
    immutable(shop)  # as a folder of root's is to a daemon that does not run as root
    d.start()
    d.wait_started()
    url = base_url(d)
    wait_for(lambda: HELD in d.log(), 30, message="the held folder in the log:\n" + d.log())
    for rel in ("mugs.jpg", "loja-b/stickers.jpg"):  # the other shops, and the top level, go on
        (d.inbox / rel).parent.mkdir(exist_ok=True)
        _drop((data_dir / "products" / Path(rel).name).read_bytes(), d.inbox, rel)
    wait_for(lambda: (d.output / "mugs.jpg").exists()
             and (d.output / "loja-b" / "stickers.jpg").exists(), 60,
             message="the other shops' thumbnails:\n" + d.log()[-3000:])
    assert (shop / "books.jpg").exists() and not (d.output / "loja-a").exists()
    held = _held(url, shop)
    assert "cannot write the shop folder" in str(held["problem"]) and "chown" in str(held["fix"])
    line, = [line for line in d.log().splitlines() if HELD in line]
    assert f"photos in {shop} wait" in line and "chown -R" in line and "state" not in line
    assert ONCE not in d.log() and "worker error" not in d.log()
    assert visible_files(d.failed) == []

    _unlock(shop)  # fixed: the next rescan (2 s here) takes the photo
    wait_for(lambda: (d.output / "loja-a" / "books.jpg").exists(), 30,
             message="the held photo once its folder takes writes:\n" + d.log()[-3000:])
    # the fault is rechecked at each rescan: the one that takes the photo, or the next (2 s)
    wait_for(lambda: "fixed after" in d.log(), 15, message="the fault cleared:\n" + d.log())
    assert get_json(url + "/health")[1]["checks"]["application"]["held_folders"] == []
    assert d.log().count(HELD) == 1, "logged once, not once per try"
    assert d.stop() == 0


@pytest.fixture
def tmpfs() -> Iterator[Callable[[Path], None]]:
    """``tmpfs(folder)``: a small tmpfs mounted on ``folder`` (unmounted at the end)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted: list[Path] = []

    def mount(folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(folder)],
                       check=True, timeout=30)
        mounted.append(folder)

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False, timeout=30)


def test_photos_on_a_filesystem_mounted_inside_the_inbox_wait_and_the_mount_is_named(
        make_daemon: Callable[..., Daemon], data_dir: Path,
        tmpfs: Callable[[Path], None]) -> None:
    d = make_daemon()
    net = d.inbox / "loja-net"
    tmpfs(net)
    d.start()
    d.wait_started()
    url = base_url(d)
    # named from the start, before any photo arrives there (an empty share stays named too)
    wait_for(lambda: HELD in d.log(), 30, message="the mount in the log:\n" + d.log())
    assert "mounted inside the inbox" in str(_held(url, net)["problem"])
    _drop((data_dir / "products" / "books.jpg").read_bytes(), net, "caneca-net.jpg")
    _drop((data_dir / "products" / "mugs.jpg").read_bytes(), d.inbox, "mugs.jpg")
    wait_for(lambda: (d.output / "mugs.jpg").exists(), 60,
             message="the top-level thumbnail:\n" + d.log()[-3000:])
    assert (net / "caneca-net.jpg").exists(), "a photo on the mount was lost"
    held = _held(url, net)
    assert "mounted inside the inbox" in str(held["problem"])
    line, = [line for line in d.log().splitlines() if HELD in line]
    assert str(net) in line and "mount the share at the inbox itself" in line
    assert "worker error" not in d.log() and "cross-device" not in d.log()
    diagnose = subprocess.run([THUMBGEN, "diagnose"], cwd=d.base, env=d.env,
                              capture_output=True, text=True, timeout=120)
    line = next(line for line in diagnose.stdout.splitlines() if "mounted inside" in line)
    assert "FAIL" in line and str(net) in line and diagnose.returncode == 1, diagnose.stdout

    subprocess.run(["umount", str(net)], check=True, timeout=30)  # fixed
    wait_for(lambda: "fixed after" in d.log(), 30, message="the fault cleared:\n" + d.log())
    assert get(url + "/health")[0] == 200
    assert d.stop() == 0
