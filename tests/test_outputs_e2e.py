"""Marketplace outputs from the real pipeline, the real local model and the real sample photos:
exactly white beyond one 8×8 block from the product and along the whole border, the product at
the preset's fill; and ``thumbgen process`` naming a failed check while still publishing."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
from loguru import logger
from PIL import Image
from prometheus_client import CollectorRegistry

from watcher import encoding
from watcher.config import Settings
from watcher.metrics import Metrics
from watcher.model import Job
from watcher.pipeline import Pipeline
from watcher.stages import compose, refine
from watcher.stages.removal.local import LocalRemover

PRODUCTS = sorted((Path(__file__).parent / "data" / "products").glob("*.jpg"))
BLOCK = 8


class Keeping:
    """The real local model, keeping the last photo it was given and the mask it made: where
    the product is, for the test to find on each canvas."""

    name = "local"
    cpu_bound = True

    def __init__(self, model: LocalRemover) -> None:
        self.model = model
        self.last: tuple[Image.Image, Image.Image] | None = None

    def mask(self, image: Image.Image) -> Image.Image:
        mask = self.model.mask(image)
        self.last = (image, mask)
        return mask

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def remover(model_path: Path) -> Iterator[Keeping]:
    model = LocalRemover(model_path)
    yield Keeping(model)
    model.close()


@pytest.fixture
def pipeline(make_settings: Callable[..., Settings], remover: Keeping) -> Pipeline:
    settings = make_settings(OUTPUTS="amazon,mercadolivre")
    return Pipeline(settings, remover, Metrics(CollectorRegistry()))


def _near(product: np.ndarray, reach: int) -> np.ndarray:
    """Pixels at most ``reach`` pixels (either axis) from the product."""
    near = product.copy()
    for _ in range(reach):
        near[1:] |= near[:-1].copy()
        near[:-1] |= near[1:].copy()
    for _ in range(reach):
        near[:, 1:] |= near[:, :-1].copy()
        near[:, :-1] |= near[:, 1:].copy()
    return near


@pytest.mark.parametrize("photo", PRODUCTS, ids=[p.stem for p in PRODUCTS])
def test_marketplace_outputs_are_exactly_white_around_the_product(
        pipeline: Pipeline, remover: Keeping, photo: Path) -> None:
    rendered = pipeline.render(Job(rel=PurePosixPath(photo.name)), photo)

    assert rendered.problems == []
    assert remover.last is not None  # where the product is: its photo and mask, placed again
    rgb, mask = remover.last
    mask = refine.refine(mask, rgb)  # as the pipeline does, once for every output
    anchor = refine.touching_edges(mask)
    for spec, _, data in rendered.files:
        assert spec.size is not None and spec.fill is not None and spec.pure_white
        placed = compose.place(rgb, mask, Image.new("RGB", spec.size, (255, 255, 255)),
                               spec.fill, anchor, pure_white=True)
        assert encoding.encode(placed.image, spec) == data  # the very file the pipeline made
        product = np.zeros((spec.size[1], spec.size[0]), bool)
        x, y = placed.at
        w, h = placed.mask.size
        product[y:y + h, x:x + w] = np.asarray(placed.mask) >= compose.TRIM_THRESHOLD
        with Image.open(io.BytesIO(data)) as im:
            pixels = np.asarray(im.convert("RGB"))
        white = (pixels == 255).all(axis=2)

        far = ~_near(product, BLOCK)
        assert white[far].all(), (spec.name, int((~white & far).sum()))
        border = np.ones_like(white)
        border[4:-4, 4:-4] = False
        # the border is white but where a product cut by the photo's frame stands on it
        assert white[border & far].all(), spec.name
        if not anchor:
            assert white[border].all(), spec.name
        rows, cols = np.nonzero(product)
        fill = max((cols.max() + 1 - cols.min()) / spec.size[0],
                   (rows.max() + 1 - rows.min()) / spec.size[1])
        # a product the photo cut on both sides of an axis runs from edge to edge of it
        both = {("left", "right"), ("top", "bottom")}
        spans = any(all(edge in anchor for edge in pair) for pair in both)
        assert abs(fill - spec.fill) <= 0.01 or (spans and fill >= 0.999), (spec.name, fill)
        if spec.name == "amazon":
            assert fill >= 0.85
        # JPEG ringing at the product's edge is there, and stays within its 8×8 blocks
        assert not white[_near(product, BLOCK) & ~product].all()


def test_a_failed_check_is_counted_logged_with_the_file_and_carried_on_the_result(
        make_settings: Callable[..., Settings], remover: Keeping, tmp_path: Path) -> None:
    toml = tmp_path / "thumbgen.toml"
    toml.write_text('[thumbnail]\noutputs = ["amazon-small"]\n\n'
                    '[outputs.amazon-small]\npreset = "amazon"\nsize = 1000\nfill = 0.8\n')
    metrics = Metrics(CollectorRegistry())
    pipeline = Pipeline(make_settings(CONFIG=toml), remover, metrics)
    records: list[dict[str, object]] = []
    sink = logger.add(lambda message: records.append(message.record["extra"]), level="WARNING")

    def count(check: str, outcome: str) -> float | None:
        return metrics.registry.get_sample_value("thumbgen_output_checks_total", {
            "output": "amazon-small", "check": check, "outcome": outcome})

    assert count("fill", "fail") == 0  # exported before the first photo
    try:
        rendered = pipeline.render(Job(rel=PurePosixPath("loja/books.jpg")), PRODUCTS[0])
    finally:
        logger.remove(sink)

    assert PRODUCTS[0].name == "books.jpg"
    assert rendered.problems == ["amazon-small: fill 0.80 < 0.85"]
    assert len(rendered.files) == 1  # the output is made all the same
    assert (count("fill", "fail"), count("fill", "pass")) == (1, 0)
    assert (count("background", "pass"), count("size", "pass")) == (1, 1)
    assert {"file": "loja/books.jpg", "output": "amazon-small", "check": "fill"} in records


def test_process_prints_a_failed_check_and_publishes_the_output(
        run_thumbgen: Callable[..., object], tmp_path: Path, model_path: Path) -> None:
    photos = tmp_path / "fotos" / "loja"
    photos.mkdir(parents=True)
    for name in ("mugs.jpg", "books.jpg"):
        (photos / name).write_bytes((PRODUCTS[0].parent / name).read_bytes())
    toml = tmp_path / "thumbgen.toml"
    toml.write_text('[thumbnail]\noutputs = ["mercadolivre", "amazon-small"]\n\n'
                    '[outputs.amazon-small]\npreset = "amazon"\nsize = 1000\nfill = 0.8\n')
    out = tmp_path / "saida"

    proc = run_thumbgen("process", str(tmp_path / "fotos"), "--out", str(out),
                        CONFIG=toml, MODEL_PATH=model_path, REMOVAL_BACKEND="local",
                        LANGUAGE="en")

    assert proc.returncode == 0, proc.stderr  # a failed check is no failed photo
    lines = proc.stdout.splitlines()
    assert "loja/books.jpg → amazon-small: fill 0.80 < 0.85" in lines
    # the mugs, cut by the photo's left and right edges, run from edge to edge: fill 1.00
    assert not any(line.startswith("loja/mugs.jpg →") for line in lines)
    # two photos, two outputs each: four files, and the line says so
    assert lines[-1] == (f"4 thumbnail(s) of 2 photo(s) written to {out}, 0 failed, 1 output "
                         "check(s) failed (published all the same)")
    assert not any("mercadolivre:" in line for line in lines)
    for name in ("books", "mugs"):
        with Image.open(out / "amazon-small" / "loja" / f"{name}.jpg") as im:
            assert im.size == (1000, 1000)  # published all the same
        assert (out / "mercadolivre" / "loja" / f"{name}.jpg").is_file()
    assert "published all the same" in proc.stderr
