"""Fairness with the real daemon: one shop's dump does not starve another shop's single photo,
and within a shop the oldest photos go first."""

from __future__ import annotations

import io
import os
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from tests.e2e.conftest import Daemon, wait_for

pytestmark = pytest.mark.e2e

BACKLOG, SETTLE = 1200, 0.3


def _tiny_jpeg(photo: Path) -> bytes:
    """A real product photo at 48 px: a valid JPEG the model finds a product in, made fast."""
    buffer = io.BytesIO()
    with Image.open(photo) as im:
        im.convert("RGB").resize((48, 48)).save(buffer, "JPEG")
    return buffer.getvalue()


def _done(log: str) -> list[tuple[str, float]]:
    """(path, ms) of every photo finished, in the order the log says so."""
    return [(m[1] or m[3], float(m[2] or m[4])) for m in
            re.finditer(r"done (\S+) in (\d+) ms|(\S+) rejected in (\d+) ms", log)]


def test_a_photo_in_a_quiet_shop_is_not_starved_by_another_shops_backlog(
        make_daemon: Callable[..., Daemon], data_dir: Path) -> None:
    d = make_daemon(SETTLE_SECONDS=str(SETTLE), OUTPUT_SIZE="64", RESCAN_INTERVAL="3600",
                    LOG_LEVEL="info")
    shop = d.inbox / "loja-a"
    shop.mkdir()
    photos = sorted((data_dir / "products").glob("*.jpg"))
    data = _tiny_jpeg(photos[0])
    now = time.time()
    for n in range(BACKLOG):  # the higher the name, the older the photo
        path = shop / f"{n:05}.jpg"
        path.write_bytes(data)
        os.utime(path, (now - 3600 - n, now - 3600 - n))
    oldest = [f"loja-a/{n:05}.jpg" for n in range(BACKLOG - 1, -1, -1)]
    d.start()
    d.wait_started()
    wait_for(lambda: len(_done(d.log())) >= 6, 60, message="the first photos of the backlog")

    (d.inbox / "loja-b").mkdir()
    (d.inbox / "loja-b" / "single.jpg").write_bytes(_tiny_jpeg(photos[1]))
    dropped = time.monotonic()
    thumb = d.output / "loja-b" / "single.jpg"
    wait_for(thumb.is_file, 60, interval=0.02, message="loja-b's photo")
    took = time.monotonic() - dropped

    done = _done(d.log())
    processing = statistics.quantiles([ms / 1000 for _, ms in done], n=10)[-1]  # p90
    left = sum(1 for _ in shop.iterdir())
    assert left > BACKLOG // 2, "the backlog should still be large"
    # SETTLE_SECONDS + 2 × one photo's processing, plus the main loop's tick and the event
    target = SETTLE + 2 * processing + 0.3
    assert took <= target, f"{took:.2f} s > {target:.2f} s (p90 processing {processing:.2f} s)"
    taken = [rel for rel, _ in done if rel.startswith("loja-a/")][:8]
    assert set(taken) <= set(oldest[:12]), f"not the oldest first: {taken}"
    assert d.stop() == 0
