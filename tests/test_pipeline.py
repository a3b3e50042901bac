"""The pipeline on a real folder tree: each outcome leaves the files where a user expects them.

Removers here are small real classes keeping the ``Remover`` protocol (our own contract), plus
the real ``LocalRemover`` for one photo end to end.
"""

from __future__ import annotations

import dataclasses
import errno
import io
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

import pytest
from loguru import logger
from PIL import Image, ImageChops
from prometheus_client import CollectorRegistry

from watcher.claim import Claims
from watcher.config import Settings
from watcher.errors import ADVICE, RejectedImage, RemovalUnavailable
from watcher.metrics import Metrics
from watcher.model import Job, JobStatus
from watcher.pipeline import UNEXPECTED_REASON, Pipeline
from watcher.stages import validate
from watcher.stages.removal.base import Remover
from watcher.stages.removal.local import LocalRemover

DATA = Path(__file__).parent / "data"
PHOTO = (DATA / "products" / "books.jpg").read_bytes()


class CentreRemover:
    """Says the product is the middle half of the photo."""

    name = "centre"
    cpu_bound = False

    def __init__(self) -> None:
        self.calls = 0

    def mask(self, image: Image.Image) -> Image.Image:
        self.calls += 1
        w, h = image.size
        mask = Image.new("L", image.size, 0)
        mask.paste(255, (w // 4, h // 4, 3 * w // 4, 3 * h // 4))
        return mask

    def close(self) -> None:
        pass


class BrokenOnceRemover(CentreRemover):
    """A bug on the first call, then works: one bad photo must not stop the next."""

    name = "broken-once"

    def mask(self, image: Image.Image) -> Image.Image:
        if self.calls == 0:
            self.calls += 1
            raise ZeroDivisionError("a bug in the remover")
        return super().mask(image)


class RaisingRemover(CentreRemover):
    """Raises ``error`` on every call."""

    name = "raising"

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def mask(self, image: Image.Image) -> Image.Image:
        self.calls += 1
        raise self.error


def _tree(make_settings: Callable[..., Settings], settle: float) -> Settings:
    # the notes' first lines in English, as the tests below compare them with the log's reasons
    s = make_settings(OUTPUT_SIZE=300, WORKERS=1, SETTLE_SECONDS=settle, LANGUAGE="en")
    for folder in (s.upload_path, s.output_path, s.processed_path, s.failed_path,
                   s.state_path, s.background_path):
        folder.mkdir(parents=True, exist_ok=True)
    return s


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    # SETTLE_SECONDS 0: a file is complete when it appears (no grace for unreadable files here;
    # the slow_settings tests below give it)
    return _tree(make_settings, 0)


@pytest.fixture
def claims(settings: Settings) -> Claims:
    c = Claims(settings.upload_path, settings.state_path, settings.worker_id)
    c.setup()
    return c


@pytest.fixture
def process(settings: Settings, claims: Claims) -> Callable[..., Job]:
    """``process(remover, rel, data)``: drop the file in the inbox, claim it, run the pipeline;
    ``data=None`` takes the file already in the inbox as it is."""
    pipelines: dict[int, Pipeline] = {}

    def run(remover: Remover, rel: str, data: bytes | None) -> Job:
        assert isinstance(remover, Remover)  # the doubles keep the real contract
        pipeline = pipelines.setdefault(
            id(remover), Pipeline(settings, remover, Metrics(CollectorRegistry())))
        path = settings.upload_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if data is not None:
            path.write_bytes(data)
        claimed = claims.claim(PurePosixPath(rel))
        assert claimed is not None
        return pipeline.run(Job(rel=PurePosixPath(rel), claimed=claimed), claims)
    return run


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message)), format="{message}",
                      level="DEBUG")
    yield lines
    logger.remove(sink)


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if not p.is_dir() and p.name != ".heartbeat")


def _note(settings: Settings, rel: str) -> dict[str, str]:
    lines = (settings.failed_path / f"{rel}.erro.txt").read_text().splitlines()
    return {"reason": lines[0], **dict(line.split(": ", 1) for line in lines[1:] if ": " in line)}


def _cutout_png(size: tuple[int, int], box: tuple[int, int, int, int]) -> bytes:
    """A product already cut out: a red box on full transparency."""
    image = Image.new("RGBA", size, (0, 0, 0, 0))
    image.paste((220, 20, 20, 255), box)
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


# -- done -------------------------------------------------------------------------------------


def test_a_photo_is_published_and_archived_with_the_local_model(
        settings: Settings, process: Callable[..., Job], model_path: Path) -> None:
    remover = LocalRemover(model_path)
    try:
        job = process(remover, "livros/books.jpg", PHOTO)
    finally:
        remover.close()

    assert job.status is JobStatus.DONE, job.reason
    assert job.backend == "local"
    assert list(job.durations) == ["validate", "remove", "compose", "publish"]
    thumbnail = settings.output_path / "livros" / "books.jpg"
    assert job.output == thumbnail
    with Image.open(thumbnail) as im:
        assert (im.format, im.size) == ("JPEG", (300, 300))
        assert im.getpixel((2, 2)) == (255, 255, 255) or min(im.getpixel((2, 2))) > 245
        box = ImageChops.invert(im.convert("L")).point(lambda v: 255 if v > 40 else 0).getbbox()
    assert box is not None  # something of the photo is on the white canvas
    assert (settings.processed_path / "livros" / "books.jpg").read_bytes() == PHOTO
    assert _files(settings.upload_path) == ["_processados/livros/books.jpg"]
    assert _files(settings.output_path) == ["livros/books.jpg"]


def test_two_workers_never_decode_at_once(make_settings: Callable[..., Settings],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # decoding is when a photo takes the most memory (a 24 MP JPEG ~45 MB): two workers
    # decoding at once were the daemon's peak, so they take turns; everything else overlaps
    settings = _tree(make_settings, 0)
    settings = dataclasses.replace(settings, workers=2)
    assert settings.cpu_workers == 2
    pipeline = Pipeline(settings, CentreRemover(), Metrics(CollectorRegistry()))
    real_decode, inside, most = validate.decode, [0], [0]
    lock = threading.Lock()

    def decode(data: bytes, limits: validate.Limits) -> validate.Photo:
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.2)  # wide enough for the other worker to arrive
        try:
            return real_decode(data, limits)
        finally:
            with lock:
                inside[0] -= 1

    monkeypatch.setattr(validate, "decode", decode)
    sources = []
    for i in range(4):
        sources.append(settings.upload_path / f"p{i}.jpg")
        sources[-1].write_bytes(PHOTO)
    rendered: list[object] = []
    threads = [threading.Thread(target=lambda s=s: rendered.append(
        pipeline.render(Job(rel=PurePosixPath(s.name)), s))) for s in sources]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    assert len(rendered) == 4  # every photo rendered
    assert most[0] == 1


def test_the_subfolders_background_is_used(settings: Settings,
                                           process: Callable[..., Job]) -> None:
    Image.new("RGB", (50, 50), (0, 160, 0)).save(settings.background_path / "livros.png")

    job = process(CentreRemover(), "livros/books.jpg", PHOTO)

    assert job.status is JobStatus.DONE
    with Image.open(settings.output_path / "livros" / "books.jpg") as im:
        r, g, b = im.convert("RGB").getpixel((3, 3))
    assert g > 140 and r < 30 and b < 30


def test_a_png_with_transparency_uses_its_own_alpha(settings: Settings,
                                                    process: Callable[..., Job]) -> None:
    remover = CentreRemover()

    # a tall product off to the left: 100×200 of a 400×400 picture
    job = process(remover, "recorte.png", _cutout_png((400, 400), (20, 50, 120, 250)))

    assert job.status is JobStatus.DONE, job.reason
    assert job.backend == "input-alpha"
    assert remover.calls == 0
    with Image.open(settings.output_path / "recorte.jpg") as im:
        grey = im.convert("L")
    box = ImageChops.invert(grey).point(lambda v: 255 if v > 60 else 0).getbbox()
    # 85 % of 300 = 255 high, 127.5 wide, in the middle
    assert box is not None
    assert all(abs(m - e) <= 3 for m, e in zip(box, (86, 22, 214, 277))), box


def test_a_png_with_barely_any_transparency_goes_to_the_remover(
        settings: Settings, process: Callable[..., Job]) -> None:
    image = Image.new("RGBA", (100, 100), (90, 90, 200, 255))
    image.putpixel((0, 0), (0, 0, 0, 0))  # one stray transparent pixel: not a cut-out
    buf = io.BytesIO()
    image.save(buf, "PNG")
    remover = CentreRemover()

    job = process(remover, "quase.png", buf.getvalue())

    assert job.status is JobStatus.DONE
    assert (job.backend, remover.calls) == ("centre", 1)


def test_a_later_input_with_the_same_output_name_replaces_it_and_says_so(
        settings: Settings, process: Callable[..., Job], log_lines: list[str]) -> None:
    first = process(CentreRemover(), "a.jpg", PHOTO)
    second = process(CentreRemover(), "a.png", _cutout_png((100, 100), (10, 10, 90, 90)))

    assert first.status is second.status is JobStatus.DONE
    assert first.output == second.output == settings.output_path / "a.jpg"
    with Image.open(settings.output_path / "a.jpg") as im:
        r, g, b = im.convert("RGB").getpixel((150, 150))
    assert r > 180 and g < 60  # the red cut-out of a.png
    assert any("replaced an earlier one" in line and "a.jpg" in line for line in log_lines)
    assert _files(settings.processed_path) == ["a.jpg", "a.png"]


# -- rejected and failed ----------------------------------------------------------------------


def test_a_file_that_is_not_a_photo_is_rejected_unchanged(settings: Settings,
                                                         process: Callable[..., Job]) -> None:
    remover = CentreRemover()
    text = b"<?php system($_GET['c']); ?>\n"

    job = process(remover, "sapatos/x.jpg", text)

    assert job.status is JobStatus.REJECTED
    assert remover.calls == 0
    assert (settings.failed_path / "sapatos" / "x.jpg").read_bytes() == text
    note = _note(settings, "sapatos/x.jpg")
    assert note["reason"] == job.reason
    assert note["reason"] == "The file is not a photo in a supported format (JPEG, PNG, WebP)."
    assert (note["stage"], note["error"], note["kind"]) == ("validate", "RejectedImage",
                                                            "not_a_photo")
    assert job.kind == "not_a_photo"
    assert _files(settings.output_path) == []
    assert _files(settings.upload_path) == ["_falhas/sapatos/x.jpg",
                                            "_falhas/sapatos/x.jpg.erro.txt"]


def test_a_truncated_photo_is_rejected_at_once_when_files_settle_at_once(
        settings: Settings, process: Callable[..., Job]) -> None:
    job = process(CentreRemover(), "meia.jpg", PHOTO[: len(PHOTO) // 2])

    assert job.status is JobStatus.REJECTED and job.kind == "incomplete"
    assert _note(settings, "meia.jpg")["reason"] == (
        "The file is not a complete JPEG image (it may still have been uploading).")


def test_with_the_default_settle_a_truncated_photo_first_waits_in_the_inbox(
        make_settings: Callable[..., Settings], claims: Claims) -> None:
    settings = make_settings(OUTPUT_SIZE=300, WORKERS=1)  # SETTLE_SECONDS 2, the default
    pipeline = Pipeline(settings, CentreRemover(), Metrics(CollectorRegistry()))
    (settings.upload_path / "meia.jpg").write_bytes(PHOTO[: len(PHOTO) // 2])
    claimed = claims.claim(PurePosixPath("meia.jpg"))
    assert claimed is not None

    job = pipeline.run(Job(rel=PurePosixPath("meia.jpg"), claimed=claimed), claims)

    # looked at again in 10 s, rejected once it has stayed the same for 40 s
    assert pipeline.incomplete_grace == 40.0
    assert job.status is JobStatus.RELEASED and job.hold == 10.0
    assert job.reason.startswith("it looks unfinished (it may still be uploading)")
    assert (settings.upload_path / "meia.jpg").read_bytes() == PHOTO[: len(PHOTO) // 2]
    assert _files(settings.failed_path) == []


def test_a_file_known_whole_is_rejected_at_once_unless_it_changed_since(
        make_settings: Callable[..., Settings], claims: Claims) -> None:
    settings = make_settings(OUTPUT_SIZE=300, WORKERS=1)  # SETTLE_SECONDS 2: 40 s of grace
    pipeline = Pipeline(settings, CentreRemover(), Metrics(CollectorRegistry()))
    half = PHOTO[: len(PHOTO) // 2]
    for name in ("inteira.jpg", "mudou.jpg"):
        (settings.upload_path / name).write_bytes(half)
        pipeline.known_whole(PurePosixPath(name), settings.upload_path / name)
    with open(settings.upload_path / "mudou.jpg", "ab") as fh:  # written to after the page
        fh.write(b"\0" * 10)

    jobs = {}
    for name in ("inteira.jpg", "mudou.jpg"):
        claimed = claims.claim(PurePosixPath(name))
        assert claimed is not None
        jobs[name] = pipeline.run(Job(rel=PurePosixPath(name), claimed=claimed), claims)

    assert jobs["inteira.jpg"].status is JobStatus.REJECTED  # damaged, said at once
    assert (settings.failed_path / "inteira.jpg").read_bytes() == half
    assert jobs["mudou.jpg"].status is JobStatus.RELEASED  # may still be arriving: the grace
    assert (settings.upload_path / "mudou.jpg").exists()


def test_a_photo_the_remover_refuses_is_rejected_at_the_remove_stage(
        settings: Settings, process: Callable[..., Job]) -> None:
    remover = RaisingRemover(RejectedImage("The background-removal service cannot read this "
                                           "photo.", "AppError", stage="remove",
                                           kind="refused_by_remote"))

    job = process(remover, "x.jpg", PHOTO)

    assert job.status is JobStatus.REJECTED
    assert _note(settings, "x.jpg")["stage"] == "remove"
    assert (settings.failed_path / "x.jpg").read_bytes() == PHOTO


def test_an_empty_cutout_is_rejected_at_the_compose_stage(settings: Settings,
                                                         process: Callable[..., Job]) -> None:
    class EmptyRemover(CentreRemover):
        def mask(self, image: Image.Image) -> Image.Image:
            return Image.new("L", image.size, 0)

    job = process(EmptyRemover(), "x.jpg", PHOTO)

    assert job.status is JobStatus.REJECTED
    note = _note(settings, "x.jpg")
    assert (note["stage"], note["kind"]) == ("compose", "no_product")
    assert note["reason"].startswith("No product could be found")


def test_a_bug_fails_one_file_keeps_it_and_the_next_one_works(
        settings: Settings, process: Callable[..., Job], log_lines: list[str]) -> None:
    remover = BrokenOnceRemover()

    failed = process(remover, "a.jpg", PHOTO)
    done = process(remover, "b.jpg", PHOTO)

    assert failed.status is JobStatus.FAILED
    assert (settings.failed_path / "a.jpg").read_bytes() == PHOTO
    note = _note(settings, "a.jpg")
    assert note["reason"] == UNEXPECTED_REASON
    assert (note["stage"], note["error"], note["kind"]) == ("remove", "ZeroDivisionError",
                                                            "unexpected")
    assert note["detail"] == "a bug in the remover"
    assert any("unexpected error" in line for line in log_lines)
    assert done.status is JobStatus.DONE
    assert (settings.output_path / "b.jpg").is_file()
    assert not (settings.output_path / "a.jpg").exists()


def test_a_failure_to_publish_keeps_the_original(settings: Settings, tmp_path: Path,
                                                 process: Callable[..., Job]) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (settings.output_path / "sapatos").symlink_to(elsewhere, target_is_directory=True)

    job = process(CentreRemover(), "sapatos/x.jpg", PHOTO)

    assert job.status is JobStatus.FAILED
    assert list(elsewhere.iterdir()) == []
    assert (settings.failed_path / "sapatos" / "x.jpg").read_bytes() == PHOTO
    assert _note(settings, "sapatos/x.jpg")["stage"] == "publish"


# -- released ---------------------------------------------------------------------------------


def test_no_remover_available_puts_the_file_back_in_the_inbox(
        settings: Settings, process: Callable[..., Job]) -> None:
    remover = RaisingRemover(RemovalUnavailable("remote down and fallback off"))

    job = process(remover, "sapatos/x.jpg", PHOTO)

    assert job.status is JobStatus.RELEASED
    assert (settings.upload_path / "sapatos" / "x.jpg").read_bytes() == PHOTO
    assert _files(settings.upload_path) == ["sapatos/x.jpg"]  # no _falhas, no claim left
    assert _files(settings.output_path) == []


def test_a_full_disk_puts_the_file_back_in_the_inbox(settings: Settings,
                                                     process: Callable[..., Job]) -> None:
    remover = RaisingRemover(OSError(errno.ENOSPC, "No space left on device"))

    job = process(remover, "x.jpg", PHOTO)

    assert job.status is JobStatus.RELEASED
    assert _files(settings.upload_path) == ["x.jpg"]
    assert (settings.upload_path / "x.jpg").read_bytes() == PHOTO


# -- uploads that pause -----------------------------------------------------------------------


@pytest.fixture
def slow_settings(make_settings: Callable[..., Settings]) -> Settings:
    """SETTLE_SECONDS 0.02: an incomplete file gets 0.4 s of grace, re-checked every 0.1 s."""
    return _tree(make_settings, 0.02)


@pytest.fixture
def slow_process(slow_settings: Settings) -> Callable[..., Job]:
    claims = Claims(slow_settings.upload_path, slow_settings.state_path, slow_settings.worker_id)
    claims.setup()
    pipeline = Pipeline(slow_settings, CentreRemover(), Metrics(CollectorRegistry()))

    def run(rel: str) -> Job:
        claimed = claims.claim(PurePosixPath(rel))
        assert claimed is not None
        return pipeline.run(Job(rel=PurePosixPath(rel), claimed=claimed), claims)
    return run


def test_an_upload_that_pauses_waits_in_the_inbox_and_is_finished_later(
        slow_settings: Settings, slow_process: Callable[..., Job]) -> None:
    path = slow_settings.upload_path / "parada.jpg"
    path.write_bytes(PHOTO[: len(PHOTO) // 2])  # the writer paused half way

    first = slow_process("parada.jpg")

    assert first.status is JobStatus.RELEASED and first.hold == pytest.approx(0.1)
    assert path.read_bytes() == PHOTO[: len(PHOTO) // 2]  # back in the inbox, untouched
    assert _files(slow_settings.failed_path) == []
    with open(path, "ab") as fh:  # the writer goes on
        fh.write(PHOTO[len(PHOTO) // 2:])

    second = slow_process("parada.jpg")

    assert second.status is JobStatus.DONE
    assert (slow_settings.processed_path / "parada.jpg").read_bytes() == PHOTO
    assert _files(slow_settings.failed_path) == []


def test_an_incomplete_file_that_stays_the_same_is_rejected_after_the_grace(
        slow_settings: Settings, slow_process: Callable[..., Job]) -> None:
    cut = PHOTO[: len(PHOTO) // 2]
    (slow_settings.upload_path / "meia.jpg").write_bytes(cut)

    assert slow_process("meia.jpg").status is JobStatus.RELEASED
    assert slow_process("meia.jpg").status is JobStatus.RELEASED  # same, but within the grace
    time.sleep(0.45)
    last = slow_process("meia.jpg")

    assert last.status is JobStatus.REJECTED and last.kind == "incomplete"
    assert (slow_settings.failed_path / "meia.jpg").read_bytes() == cut
    note = (slow_settings.failed_path / "meia.jpg.erro.txt").read_text().splitlines()
    assert note[0] == "The file is not a complete JPEG image (it may still have been uploading)."
    assert note[1] == ADVICE["incomplete"]


@pytest.mark.parametrize("start", [b"", PHOTO[:40_000], b"\0" * 40_000],
                         ids=["empty", "cut short", "zeros reserved first"])
def test_every_kind_of_unfinished_upload_is_given_time(
        slow_settings: Settings, slow_process: Callable[..., Job], start: bytes) -> None:
    path = slow_settings.upload_path / "chegando.jpg"
    path.write_bytes(start)

    assert slow_process("chegando.jpg").status is JobStatus.RELEASED
    path.write_bytes(PHOTO)  # the upload ends
    assert slow_process("chegando.jpg").status is JobStatus.DONE


def test_a_file_that_can_never_be_a_photo_is_rejected_at_once_even_with_a_grace(
        slow_settings: Settings, slow_process: Callable[..., Job]) -> None:
    (slow_settings.upload_path / "x.jpg").write_bytes(PHOTO)
    os.link(slow_settings.upload_path / "x.jpg", slow_settings.base_path / "elsewhere.jpg")

    job = slow_process("x.jpg")

    assert job.status is JobStatus.REJECTED and job.kind == "link"


@pytest.mark.parametrize("data", [b"shopping list: milk, eggs\n", b"%PDF-1.7\n" + b"x" * 500,
                                  b"GIF89a" + b"\0" * 100, b"PK\x03\x04" + b"\0" * 100],
                         ids=["text", "pdf", "gif", "zip"])
def test_a_file_that_plainly_is_something_else_is_rejected_at_once(
        slow_settings: Settings, slow_process: Callable[..., Job], data: bytes) -> None:
    """A text file renamed notas.jpg waited 40 s before (a new-user trial): its first bytes are
    no unfinished photo's, so no grace."""
    (slow_settings.upload_path / "notas.jpg").write_bytes(data)

    job = slow_process("notas.jpg")

    assert job.status is JobStatus.REJECTED and job.kind == "not_a_photo"
    assert (slow_settings.failed_path / "notas.jpg").read_bytes() == data


def test_the_wait_of_an_unfinished_upload_is_said_once(
        slow_settings: Settings, slow_process: Callable[..., Job]) -> None:
    (slow_settings.upload_path / "meia.jpg").write_bytes(PHOTO[:40_000])

    first, second = slow_process("meia.jpg"), slow_process("meia.jpg")

    assert first.status is second.status is JobStatus.RELEASED
    assert (first.quiet, second.quiet) == (False, True)
    assert "waits in the inbox" not in first.reason


def test_the_notes_first_two_lines_are_in_the_shops_language(
        make_settings: Callable[..., Settings]) -> None:
    """LANGUAGE pt-BR (the default): the shop's lines in Portuguese, the technical ones as ever."""
    s = make_settings(OUTPUT_SIZE=300, WORKERS=1, SETTLE_SECONDS=0)
    assert s.language == "pt-BR"
    for folder in (s.upload_path, s.failed_path, s.state_path):
        folder.mkdir(parents=True, exist_ok=True)
    claims = Claims(s.upload_path, s.state_path, s.worker_id)
    claims.setup()
    (s.upload_path / "lista.jpg").write_bytes(b"uma lista de compras\n")
    claimed = claims.claim(PurePosixPath("lista.jpg"))
    assert claimed is not None
    job = Pipeline(s, CentreRemover(), Metrics(CollectorRegistry())).run(
        Job(rel=PurePosixPath("lista.jpg"), claimed=claimed), claims)

    lines = (s.failed_path / "lista.jpg.erro.txt").read_text().splitlines()
    assert lines[0] == "O arquivo não é uma foto em um formato aceito (JPEG, PNG, WebP)."
    assert lines[1] == ("Salve a imagem em um dos formatos aceitos e coloque esse arquivo em "
                        "produtos/.")
    assert lines[3:5] == ["file: lista.jpg", "stage: validate"]
    assert lines[-1] == "kind: not_a_photo"
    assert job.reason.startswith("The file is not a photo")  # the log stays in English
