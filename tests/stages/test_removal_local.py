"""LocalRemover with the real U²-Net-p model on real product photos."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image, ImageStat

from watcher.errors import ModelError
from watcher.stages.removal.base import Remover
from watcher.stages.removal.local import LocalRemover


@pytest.fixture(scope="module")
def remover(model_path: Path) -> Iterator[LocalRemover]:
    r = LocalRemover(model_path)
    yield r
    r.close()


def _photo(data_dir: Path, name: str) -> Image.Image:
    with Image.open(data_dir / "products" / name) as im:
        return im.convert("RGB")


def _mean(mask: Image.Image, box: tuple[float, float, float, float]) -> float:
    w, h = mask.size
    x0, y0, x1, y1 = box
    return ImageStat.Stat(mask.crop((int(w * x0), int(h * y0), int(w * x1), int(h * y1)))).mean[0]


def test_keeps_the_remover_contract(remover: LocalRemover) -> None:
    assert isinstance(remover, Remover)
    assert remover.name == "local"
    assert remover.cpu_bound is True


@pytest.mark.parametrize(
    "name", ["books.jpg", "caps_cap_03.jpg", "dresses_dress_02.jpg", "stickers.jpg"]
)
def test_mask_covers_the_product_and_not_the_corners(
    remover: LocalRemover, data_dir: Path, name: str
) -> None:
    image = _photo(data_dir, name)

    mask = remover.mask(image)

    assert mask.mode == "L"
    assert mask.size == image.size
    assert _mean(mask, (0.4, 0.4, 0.6, 0.6)) > 200
    corners = [(0, 0, 0.1, 0.1), (0.9, 0, 1, 0.1), (0, 0.9, 0.1, 1), (0.9, 0.9, 1, 1)]
    for corner in corners:
        assert _mean(mask, corner) < 30, corner
    assert mask.getextrema() == (0, 255)


@pytest.mark.parametrize("size", [(1, 1), (37, 901), (2000, 1500)])
def test_mask_size_equals_the_input_size(remover: LocalRemover, size: tuple[int, int]) -> None:
    assert remover.mask(Image.new("RGB", size, (200, 40, 40))).size == size


def test_odd_inputs_give_a_mask_not_an_error(remover: LocalRemover, data_dir: Path) -> None:
    photo = _photo(data_dir, "books.jpg")
    for image in [
        Image.new("RGB", (64, 64), (0, 0, 0)),  # all black: the /max must not divide by zero
        photo.convert("L"),
        photo.convert("RGBA"),
    ]:
        mask = remover.mask(image)
        assert (mask.mode, mask.size) == ("L", image.size)


def test_threads_at_once_give_identical_masks(model_path: Path, data_dir: Path) -> None:
    remover = LocalRemover(model_path)  # fresh: the first calls race to load the model
    images = [_photo(data_dir, "mugs.jpg"), _photo(data_dir, "t-shirts.jpg")]
    jobs = images * 4

    with ThreadPoolExecutor(max_workers=4) as pool:
        masks = list(pool.map(remover.mask, jobs))

    expected = [remover.mask(im).tobytes() for im in images]
    for i, mask in enumerate(masks):
        assert mask.tobytes() == expected[i % 2]
    remover.close()


def test_loads_lazily_and_close_ends_it(model_path: Path) -> None:
    remover = LocalRemover(model_path, threads=2)
    assert not remover.loaded

    remover.load()
    assert remover.loaded

    remover.close()
    assert not remover.loaded
    with pytest.raises(RuntimeError):
        remover.mask(Image.new("RGB", (8, 8)))


def test_missing_model_raises_model_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "u2netp.onnx"
    remover = LocalRemover(missing)

    with pytest.raises(ModelError, match="thumbgen models fetch") as err:
        remover.mask(Image.new("RGB", (8, 8)))

    assert str(missing) in str(err.value)
    assert not remover.loaded


def test_corrupt_model_raises_model_error(tmp_path: Path, model_path: Path) -> None:
    corrupt = tmp_path / "u2netp.onnx"
    corrupt.write_bytes(model_path.read_bytes()[:200_000])

    with pytest.raises(ModelError, match="thumbgen models fetch") as err:
        LocalRemover(corrupt).load()

    assert str(corrupt) in str(err.value)


def test_calls_are_counted_when_given_metrics(model_path: Path, data_dir: Path) -> None:
    from prometheus_client import CollectorRegistry

    from watcher.metrics import Metrics

    metrics = Metrics(CollectorRegistry())
    remover = LocalRemover(model_path, metrics=metrics)
    with Image.open(data_dir / "products" / "mugs.jpg") as im:
        remover.mask(im.convert("RGB").resize((320, 240)))
    value = metrics.registry.get_sample_value
    assert value("thumbgen_removal_requests_total", {"backend": "local", "outcome": "ok"}) == 1
    remover.close()
    with pytest.raises(RuntimeError):
        remover.mask(Image.new("RGB", (10, 10)))
    assert value("thumbgen_removal_requests_total", {"backend": "local", "outcome": "error"}) == 1
