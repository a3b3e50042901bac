"""`make bench`, section 10: the local model's runtimes side by side (``LOCAL_RUNTIME``).

onnxruntime fp32 (the reference), OpenVINO f32 and, where the CPU computes bf16 natively
(``amx_bf16`` or ``avx512_bf16``), OpenVINO bf16: each loaded as the daemon loads it
(``watcher.stages.removal.engines``, one run at a time on every core), timed on the nine sample
photos with the rows interleaved, so a busy moment of the machine hits every row alike. Each
row's masks (0..255, scaled to the photo, cut at 128) are compared with the reference's: the
IoU, whose target is the agreement ``auto`` asks of its probe (≥ 0.97). Then what ``auto``
chooses here, probe included.

    .venv/bin/python bench/runtimes.py [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from report import table  # noqa: E402
from watcher import config  # noqa: E402
from watcher.stages.removal import runtime  # noqa: E402
from watcher.stages.removal.engines import (BF16, FP32, Engine, OnnxEngine,  # noqa: E402
                                            OpenVinoEngine, preprocess)

SAMPLES = HERE.parent / "tests" / "data" / "products"


SUMMARY: dict[str, object] = {}


def section(rounds: int = 3) -> list[str]:
    settings = config.load(config_file=Path(os.devnull), env={})
    model, threads = settings.model_path, settings.cpu_workers
    files = sorted(SAMPLES.glob("*.jpg"))
    photos = []
    for path in files:
        with Image.open(path) as im:
            photos.append(im.convert("RGB"))
    batches = [preprocess(p) for p in photos]
    flag = runtime.native_bf16()
    makers: list[tuple[str, Callable[[], Engine]]] = [
        ("onnxruntime (reference)", lambda: OnnxEngine(model, threads)),
        ("OpenVINO, f32 asked", lambda: OpenVinoEngine(model, threads, FP32))]
    if flag:
        makers.append(("OpenVINO, bf16 asked", lambda: OpenVinoEngine(model, threads, BF16)))
    engines = []
    for name, make in makers:
        try:
            engines.append((name, make()))
        except ImportError:
            engines.append((name, None))
    ready = [(name, e) for name, e in engines if e is not None]
    masks = {name: [runtime.product_pixels(e.run(b), p.size) for b, p in zip(batches, photos)]
             for name, e in ready}  # also the first run of each, which allocates
    times: dict[str, list[float]] = {name: [] for name, _ in ready}
    for _ in range(rounds):
        for batch in batches:
            for name, engine in ready:
                start = time.perf_counter()
                engine.run(batch)
                times[name].append(time.perf_counter() - start)
    reference = ready[0][0]
    ref_ms = statistics.median(times[reference]) * 1000
    rows: list[tuple[object, ...]] = []
    for name, engine in engines:
        if engine is None:
            rows.append((name, "-", "-", "-", "-", "-", "-", "needs the openvino extra"))
            continue
        ms = statistics.median(times[name]) * 1000
        ious = [runtime.iou(a, b) for a, b in zip(masks[name], masks[reference])]
        worst = min(ious)
        rows.append((name, engine.precision, f"{ms:.0f}", f"{1000 / ms:.2f}",
                     f"{ref_ms / ms:.2f}×", f"{np.mean(ious):.3f}", f"{worst:.3f}",
                     "met" if worst >= runtime.AGREEMENT else
                     f"NOT met ({files[int(np.argmin(ious))].name})"))
    if not flag:
        rows.append(("OpenVINO, bf16 asked", "-", "-", "-", "-", "-", "-",
                     f"not measured: no native bf16 ({' or '.join(runtime.BF16_FLAGS)}) here"))
    _, choice = runtime.open_engine("auto", model, threads)
    fastest = min(ready, key=lambda item: statistics.median(times[item[0]]))[0]
    agreement = min(runtime.iou(a, b) for name, _ in ready
                    for a, b in zip(masks[name], masks[reference]))
    SUMMARY.update(runtime_choice=str(choice), runtime_ref_ms=ref_ms,
                   runtime_best=f"{fastest}: {statistics.median(times[fastest]) * 1000:.0f} ms",
                   runtime_iou=agreement)
    return [f"  U²-Net-p 320², {len(photos)} photos of {SAMPLES.relative_to(HERE.parent)}, "
            f"{threads} threads, one run at a time (the daemon's way), {rounds} interleaved "
            "rounds; IoU of each photo's mask against the reference's",
            table(["runtime", "precision run", "ms/run", "runs/s", "speed", "IoU mean", "IoU min",
                   f"IoU min ≥ {runtime.AGREEMENT}"], rows),
            f"  LOCAL_RUNTIME=auto here: {choice}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    print("\n".join(section(args.rounds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
