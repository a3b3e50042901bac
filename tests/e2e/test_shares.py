"""A network share, simulated: the inbox on a FUSE mount (bindfs) whose photos are written
through the folder underneath, as another host writes to an NFS share. inotify hears nothing of
those writes; WATCH_MODE=auto must see the filesystem type, poll, and say so."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import THUMBGEN, Daemon, daemon_env, wait_for

pytestmark = pytest.mark.e2e

POLL, SETTLE = 1.0, 0.3


@pytest.fixture
def share(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(SRC, MNT): MNT is a bindfs mount of SRC; unmounted after the test."""
    if os.geteuid() != 0:
        pytest.skip("mounting FUSE (bindfs) needs root here")
    if shutil.which("bindfs") is None:
        pytest.skip("bindfs is not installed (Debian package bindfs; `make test` installs it "
                    "as root)")
    src, mnt = tmp_path / "src", tmp_path / "mnt"
    src.mkdir()
    mnt.mkdir()
    subprocess.run(["bindfs", str(src), str(mnt)], check=True, timeout=30)
    try:
        yield src, mnt
    finally:
        unmount = shutil.which("fusermount3") or "fusermount"
        subprocess.run([unmount, "-u", str(mnt)], timeout=30, check=False)


def test_photos_written_under_a_fuse_share_are_taken_by_polling(
        share: tuple[Path, Path], data_dir: Path, model_path: Path) -> None:
    src, mnt = share
    for folder in ("produtos", "backgrounds", "thumbnails-prontas"):
        (src / folder).mkdir()
    env = {**daemon_env(mnt), "THUMBGEN_POLL_INTERVAL": str(POLL),
           "THUMBGEN_SETTLE_SECONDS": str(SETTLE), "THUMBGEN_RESCAN_INTERVAL": "3600",
           "THUMBGEN_OUTPUT_SIZE": "300"}
    env.pop("THUMBGEN_WATCH_MODE", None)  # the default, auto
    config = subprocess.run([THUMBGEN, "config"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert "Watching" in config.stdout and "polling (auto: filesystem fuse" in config.stdout
    diagnose = subprocess.run([THUMBGEN, "diagnose"], env=env, capture_output=True, text=True,
                              timeout=60)
    assert "not used: polling every 1 s (auto: filesystem fuse" in diagnose.stdout

    daemon = Daemon(mnt, env)
    daemon.start()
    try:
        daemon.wait_started()
        assert "polling mode: auto: filesystem fuse" in daemon.log()
        photos = sorted((data_dir / "products").glob("*.jpg"))[:3]
        for n, photo in enumerate(photos):  # through the folder underneath: no inotify event
            rel = Path(f"loja-{n}" if n else ".") / photo.name
            (src / "produtos" / rel).parent.mkdir(exist_ok=True)
            shutil.copyfile(photo, src / "produtos" / rel)
        dropped = time.monotonic()
        wanted = [mnt / "thumbnails-prontas" / (f"loja-{n}" if n else ".") /
                  photo.with_suffix(".jpg").name for n, photo in enumerate(photos)]
        wait_for(lambda: all(p.is_file() for p in wanted), 60,
                 message="thumbnails of the photos written under the share; log:\n"
                 + daemon.log()[-2000:])
        took = time.monotonic() - dropped
        # poll + settle (+ one more poll: a folder made after a poll is listed by the next)
        # + processing; the full rescan (an hour here) is not what found them
        assert took < 2 * POLL + SETTLE + 15, f"{took:.1f} s"
        assert daemon.stop() == 0
    finally:
        if daemon.running():
            daemon.kill()
