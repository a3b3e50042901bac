"""watcher/web/recent.py: the gallery's index is bounded and fed without walking per request."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from watcher import outputs
from watcher.web.recent import Recent

DEFAULT = {"size": (1200, 1200), "format": "jpeg", "quality": 90, "fill": 0.85}


def test_the_start_scan_looks_at_a_bounded_number_of_entries(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "loja").mkdir(parents=True)
    for n in range(300):
        path = out / "loja" / f"p{n:03}.jpg"
        path.write_bytes(b"x")
        os.utime(path, (1_000_000 + n, 1_000_000 + n))
    recent = Recent(out, tmp_path / "produtos", outputs.build(DEFAULT, ("default",), {}, {}),
                    max_recent=50, scan_limit=120)

    found = recent.load()

    page, total = recent.page(1, 48, None)
    assert found == total == 50  # kept: the newest 50 of the 119 files it looked at
    assert [m.when for m in page] == sorted((m.when for m in page), reverse=True)


def test_a_photo_with_several_outputs_is_one_entry_newest_first(tmp_path: Path) -> None:
    plan = outputs.build(DEFAULT, ("default", "amazon"), {}, {})
    recent = Recent(tmp_path / "out", tmp_path / "produtos", plan)

    recent.record(PurePosixPath("loja/a.jpg"), when=1.0)
    recent.record(PurePosixPath("b.png"), when=2.0)
    recent.record(PurePosixPath("loja/a.jpg"), when=3.0)  # made again

    page, total = recent.page(1, 48, None)
    assert total == 2 and [m.key for m in page] == ["loja/a", "b"]
    assert page[0].outputs == ("default/loja/a.jpg", "amazon/loja/a.jpg")
    assert recent.page(1, 48, "loja")[1] == 1 and recent.find("b", since=2.5) is None


def test_outputs_of_an_earlier_configuration_are_not_taken_for_shops(tmp_path: Path) -> None:
    """Seen in a new-user trial: after OUTPUTS went from amazon,mercadolivre,cutout back to one
    output, the folder filter listed amazon, cutout and mercadolivre as shops and each earlier
    photo was three cards."""
    out, inbox = tmp_path / "out", tmp_path / "produtos"
    for name in ("amazon/loja/a.jpg", "cutout/loja/a.png", "loja/b.jpg", "mercadolivre/c.jpg"):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(b"x")
    (inbox / "mercadolivre").mkdir(parents=True)  # a real shop folder of that name
    recent = Recent(out, inbox, outputs.build(DEFAULT, ("default",), {}, {}))

    assert recent.load() == 3
    assert recent.folders() == {"loja", "mercadolivre"}
    assert sorted(m.key for m in recent.page(1, 48, None)[0]) == [
        "loja/a", "loja/b", "mercadolivre/c"]
