"""`make contact-sheet`: the four presets of every sample photo on one page, ``docs/presets.png``.

Each photo of ``tests/data/products/`` goes through the real ``Pipeline.render`` with the local
model and OUTPUTS=default,amazon,mercadolivre,cutout (``default`` on ``backgrounds/default.jpg``).
Rows are photos, columns presets; every output is scaled into its cell as it was published, on a
grey page so that a white canvas shows its edges, and the cut-out on a checkerboard so that its
transparency shows. Each cell also says what the output checks found.

Run: .venv/bin/python bench/contact_sheet.py [--out docs/presets.png] [--cell 200]
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
from pathlib import Path, PurePosixPath

from PIL import Image, ImageDraw, ImageFont
from prometheus_client import CollectorRegistry

from watcher import config
from watcher.metrics import Metrics
from watcher.model import Job
from watcher.pipeline import Pipeline
from watcher.stages.removal.local import LocalRemover

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "tests" / "data" / "products"
OUTPUTS = ("default", "amazon", "mercadolivre", "cutout")
PAGE, INK, FRAME = (222, 222, 222), (30, 30, 30), (150, 150, 150)
CHECKER = ((255, 255, 255), (204, 204, 204))
LABEL_W, HEAD_H, PAD = 170, 54, 10


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "presets.png")
    parser.add_argument("--cell", type=int, default=200, help="cell side in pixels")
    args = parser.parse_args(argv)
    photos = sorted(SAMPLES.glob("*.jpg"))
    with tempfile.TemporaryDirectory(prefix="contact-") as tmp:
        settings = config.load(config_file=Path(os.devnull), env={
            "THUMBGEN_BASE_PATH": tmp, "THUMBGEN_OUTPUTS": ",".join(OUTPUTS),
            "THUMBGEN_BACKGROUND_PATH": str(REPO / "backgrounds")})
        remover = LocalRemover(settings.model_path)
        try:
            pipeline = Pipeline(settings, remover, Metrics(CollectorRegistry()))
            heads = [f"{spec.name}\n{_describe(spec.size, spec.background, spec.fill)}"
                     for spec in settings.plan.outputs]
            rows = []
            for photo in photos:
                rendered = pipeline.render(Job(rel=PurePosixPath(photo.name)), photo)
                rows.append((photo.stem, [data for _, _, data in rendered.files],
                             rendered.problems))
                print(f"{photo.name}: {', '.join(rendered.problems) or 'every check passed'}",
                      flush=True)
        finally:
            remover.close()
    sheet = _sheet(heads, rows, args.cell)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, "PNG", optimize=True)
    print(f"{args.out} ({sheet.width}×{sheet.height}, {args.out.stat().st_size / 1e6:.2f} MB)")
    return 0


def _describe(size: tuple[int, int] | None, background: str, fill: float | None) -> str:
    where = "own size" if size is None else f"{size[0]}x{size[1]}"  # the font has no ×
    share = "" if fill is None else f", {fill:.0%}"
    return f"{where}, {background}{share}"


def _sheet(heads: list[str], rows: list[tuple[str, list[bytes], list[str]]],
           cell: int) -> Image.Image:
    font = _font(13)
    small = _font(11)
    step = cell + PAD
    width = LABEL_W + len(heads) * step + PAD
    height = HEAD_H + len(rows) * step + PAD
    sheet = Image.new("RGB", (width, height), PAGE)
    draw = ImageDraw.Draw(sheet)
    for col, head in enumerate(heads):
        draw.multiline_text((LABEL_W + col * step, 10), head, fill=INK, font=font, spacing=4)
    for row, (name, files, problems) in enumerate(rows):
        top = HEAD_H + row * step
        draw.multiline_text((PAD, top + 4), _wrap(name, 20), fill=INK, font=font, spacing=3)
        draw.multiline_text((PAD, top + cell - 30), "checks: " + (
            "all passed" if not problems else f"{len(problems)} failed"), fill=INK, font=small)
        for col, data in enumerate(files):
            left = LABEL_W + col * step
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                thumb = _fit(im, cell)
            x = left + (cell - thumb.width) // 2
            y = top + (cell - thumb.height) // 2
            if thumb.mode == "RGBA":
                board = _checkerboard(thumb.size)
                board.paste(thumb, (0, 0), thumb)
                thumb = board
            sheet.paste(thumb.convert("RGB"), (x, y))
            draw.rectangle((x - 1, y - 1, x + thumb.width, y + thumb.height), outline=FRAME)
    return sheet


def _fit(im: Image.Image, cell: int) -> Image.Image:
    scale = cell / max(im.size)
    size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
    return im.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _checkerboard(size: tuple[int, int], square: int = 10) -> Image.Image:
    board = Image.new("RGB", size, CHECKER[0])
    draw = ImageDraw.Draw(board)
    for y in range(0, size[1], square):
        for x in range((y // square) % 2 * square, size[0], 2 * square):
            draw.rectangle((x, y, x + square - 1, y + square - 1), fill=CHECKER[1])
    return board


def _wrap(text: str, width: int) -> str:
    parts, line = [], ""
    for piece in text.replace("_", "_\u200b").split("\u200b"):
        if len(line) + len(piece) > width and line:
            parts.append(line)
            line = ""
        line += piece
    return "\n".join(parts + [line])


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size)
    except (TypeError, OSError):  # Pillow without FreeType: the small bitmap font
        return ImageFont.load_default()


if __name__ == "__main__":
    sys.exit(main())
