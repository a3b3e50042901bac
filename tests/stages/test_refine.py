"""refine on real photos with the real U²-Net-p model, and on drawn masks for each rule.

The cut-outs in ``tests/data/cutouts/`` are rembg's example photos with its U²-Net reference
cut-outs: a bigger model's answer, not hand-made truth, so they measure agreement and haze.
``bench/masks.py`` runs the same measures on all nine of rembg's examples.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from watcher.stages.refine import refine, touching_edges
from watcher.stages.removal.local import LocalRemover

CUTOUTS = ("car-1", "girl-2", "animal-2")
GREY, RED = (128, 128, 128), (200, 30, 30)


@pytest.fixture(scope="module")
def remover(model_path: Path) -> Iterator[LocalRemover]:
    r = LocalRemover(model_path)
    yield r
    r.close()


@pytest.fixture(scope="module")
def cutouts(remover: LocalRemover) -> dict[str, tuple[Image.Image, Image.Image, np.ndarray]]:
    """Per name: the photo, the model's mask as compose gets it today, the reference alpha."""
    folder = Path(__file__).parent.parent / "data" / "cutouts"
    found = {}
    for name in CUTOUTS:
        with Image.open(folder / f"{name}.jpg") as im:
            photo = im.convert("RGB")
        with Image.open(folder / f"{name}.out.png") as im:
            reference = np.asarray(im.getchannel("A"))
        found[name] = (photo, remover.mask(photo), reference)
    return found


def _iou(mask: Image.Image, reference: np.ndarray) -> float:
    ours, theirs = np.asarray(mask) >= 128, reference >= 128
    return float((ours & theirs).sum() / (ours | theirs).sum())


def _haze(mask: Image.Image, reference: np.ndarray) -> float:
    """% of the reference's background that ``mask`` leaves at 13–127."""
    background = np.asarray(mask)[reference < 128]
    return float(((background >= 13) & (background <= 127)).mean() * 100)


# -- real photos, real model --------------------------------------------------------------------


@pytest.mark.parametrize("name", CUTOUTS)
def test_the_haze_goes_and_the_agreement_stays(cutouts: dict, name: str) -> None:
    photo, raw, reference = cutouts[name]

    refined = refine(raw, photo)

    assert refined.mode == "L" and refined.size == photo.size
    assert _haze(raw, reference) > 0.7  # what compose gets today
    assert _haze(refined, reference) <= 0.3
    assert _iou(refined, reference) >= _iou(raw, reference) - 0.01


def test_agreement_on_the_whole_set_is_not_lower(cutouts: dict) -> None:
    before = [_iou(raw, ref) for photo, raw, ref in cutouts.values()]
    after = [_iou(refine(raw, photo), ref) for photo, raw, ref in cutouts.values()]

    assert np.mean(after) >= np.mean(before)


@pytest.mark.parametrize("name", CUTOUTS)
def test_the_background_away_from_the_subject_is_exactly_zero(cutouts: dict, name: str) -> None:
    photo, raw, reference = cutouts[name]
    # 12 px or more away from anything the reference keeps at all
    kept = Image.fromarray(np.where(reference > 0, 255, 0).astype(np.uint8))
    near = np.asarray(kept.filter(ImageFilter.BoxBlur(12))) > 0

    refined = np.asarray(refine(raw, photo))

    assert (np.asarray(raw)[~near] > 0).any()  # the model's haze was there
    assert (refined[~near] == 0).all()


def test_the_ghost_of_hair_below_a_cap_is_gone(remover: LocalRemover, data_dir: Path) -> None:
    with Image.open(data_dir / "products" / "caps_cap_03.jpg") as im:
        photo = im.convert("RGB")
    raw = remover.mask(photo)
    below = (0, int(photo.height * 0.65), photo.width, photo.height)  # hair and shoulder only

    refined = refine(raw, photo)

    assert np.count_nonzero(np.asarray(raw.crop(below)) >= 13) > 100_000
    assert refined.crop(below).getextrema() == (0, 0)
    assert np.asarray(refined.crop((0, 0, photo.width, photo.height // 2))).max() == 255


def test_a_smaller_mask_gives_the_same_answer_at_the_photos_size(cutouts: dict) -> None:
    photo, raw, reference = cutouts["girl-2"]
    low_res = raw.resize((320, 320), Image.Resampling.BILINEAR)  # a remote app's small answer

    refined = refine(low_res, photo)

    assert refined.size == photo.size
    assert _iou(refined, np.asarray(refine(raw, photo))) > 0.98
    assert _haze(refined, reference) <= 0.3


# -- each rule on drawn masks ---------------------------------------------------------------------


def _scene(size: tuple[int, int] = (600, 400)) -> tuple[Image.Image, Image.Image]:
    """A grey photo and an empty mask to draw a product on, both at ``size``."""
    return Image.new("RGB", size, GREY), Image.new("L", size, 0)


def _draw(photo: Image.Image, mask: Image.Image, box: tuple[int, int, int, int],
          colour: tuple[int, int, int] = RED, value: int = 255) -> None:
    ImageDraw.Draw(photo).rectangle(box, fill=colour)
    ImageDraw.Draw(mask).rectangle(box, fill=value)


def test_a_clean_product_keeps_its_box_and_sizes_match() -> None:
    photo, mask = _scene((1999, 1501))
    _draw(photo, mask, (500, 400, 1500, 1100))
    soft = mask.filter(ImageFilter.GaussianBlur(6))  # the model's blurred edge

    refined = refine(soft, photo)

    assert refined.size == photo.size
    assert refined.getpixel((1000, 750)) == 255 and refined.getpixel((100, 100)) == 0
    box = refined.point([0] * 128 + [255] * 128).getbbox()
    assert box is not None and all(abs(a - b) <= 2 for a, b in zip(box, (500, 400, 1501, 1101)))


def test_small_islands_far_from_the_subject_are_dropped_near_ones_kept() -> None:
    photo, mask = _scene()
    _draw(photo, mask, (200, 100, 400, 300))  # the product: 201² px
    _draw(photo, mask, (20, 20, 40, 40))  # debris in a corner: 1 % of it, far
    _draw(photo, mask, (405, 190, 411, 230))  # a piece of strap beside it: 0.7 %, near
    _draw(photo, mask, (500, 330, 590, 390))  # a second product: 14 %, far

    refined = refine(mask, photo)

    assert refined.crop((15, 15, 45, 45)).getextrema() == (0, 0)
    assert refined.getpixel((407, 210)) == 255
    assert refined.getpixel((545, 360)) == 255
    assert refined.getpixel((300, 200)) == 255


def test_a_hole_the_model_was_unsure_of_is_filled_a_real_one_kept() -> None:
    photo, mask = _scene()
    _draw(photo, mask, (100, 100, 500, 300))
    _draw(photo, mask, (150, 150, 200, 200), value=100)  # a logo the model doubted (0.39)
    _draw(photo, mask, (350, 150, 450, 250), colour=GREY, value=0)  # the inside of a handle

    refined = refine(mask, photo)

    assert refined.crop((150, 150, 201, 201)).getextrema() == (255, 255)
    assert refined.crop((355, 155, 446, 246)).getextrema() == (0, 0)


def test_an_empty_mask_stays_empty_and_a_full_one_full() -> None:
    photo, empty = _scene()

    assert refine(empty, photo).getextrema() == (0, 0)
    assert refine(Image.new("L", (40, 30), 255), photo).getextrema() == (255, 255)


@pytest.mark.parametrize("size", [(1, 1), (7, 5), (513, 1030), (2401, 1601)])
def test_any_photo_size(size: tuple[int, int]) -> None:
    photo, mask = _scene(size)
    _draw(photo, mask, (size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2))

    refined = refine(mask, photo)

    assert refined.size == size
    assert refined.getpixel((size[0] * 3 // 8, size[1] * 3 // 8)) == 255


def test_only_an_l_mask_and_an_rgb_photo() -> None:
    photo, mask = _scene()
    with pytest.raises(ValueError):
        refine(mask.convert("RGB"), photo)
    with pytest.raises(ValueError):
        refine(mask, photo.convert("RGBA"))


# -- touching_edges ----------------------------------------------------------------------------


def test_a_subject_cut_by_the_bottom_edge_touches_bottom(cutouts: dict) -> None:
    photo, raw, _ = cutouts["girl-2"]  # cut at the waist by the frame

    assert touching_edges(refine(raw, photo)) == {"bottom"}


def test_a_subject_inside_the_frame_touches_nothing(cutouts: dict) -> None:
    photo, raw, _ = cutouts["car-1"]

    assert touching_edges(refine(raw, photo)) == frozenset()


def test_a_few_stray_pixels_on_an_edge_do_not_count() -> None:
    mask = Image.new("L", (600, 400), 0)
    ImageDraw.Draw(mask).rectangle((200, 100, 400, 300), fill=255)  # floats
    ImageDraw.Draw(mask).rectangle((10, 397, 14, 399), fill=255)  # specks on the bottom edge
    ImageDraw.Draw(mask).rectangle((599, 50, 599, 52), fill=255)

    assert touching_edges(mask) == frozenset()


def test_a_shirt_cut_at_the_waist_and_an_arm_cut_at_the_side() -> None:
    mask = Image.new("L", (600, 400), 0)
    ImageDraw.Draw(mask).rectangle((150, 80, 450, 399), fill=255)  # cut by the bottom edge
    ImageDraw.Draw(mask).rectangle((450, 180, 599, 260), fill=255)  # an arm out to the right

    assert touching_edges(mask) == {"bottom", "right"}
    assert touching_edges(Image.new("L", (50, 50), 0)) == frozenset()
