"""Section 6: what more outputs cost: the whole render of a 12 MP photo, 1 output against 4.

The real ``Pipeline.render`` (validate → local model → compose, encode and check each output)
with OUTPUTS=default against OUTPUTS=default,amazon,mercadolivre,cutout: one pipeline each, one
``LocalRemover`` shared, everything on core 0. The two renders of a photo run back to back, their
order swapped every round, so a burst of load from other processes hits both alike. Wall and CPU
time are both kept. Target: 4 outputs ≤ 1.6 × one.

Then where the time of the four goes, output by output (compose, encode, check: the same calls
``render`` makes, timed one by one on the same photos), which is also the cost of the output
checks at 1200² and 2000².
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import TypeVar

from prometheus_client import CollectorRegistry

from report import median, table
from watcher import config, encoding
from watcher.metrics import Metrics
from watcher.model import Job
from watcher.pipeline import Pipeline, working_target
from watcher.stages import checks, compose, validate
from watcher.stages.removal.local import LocalRemover

CORE = 0
ONE, FOUR = "default", "default,amazon,mercadolivre,cutout"
TARGET = 1.6
SUMMARY: dict[str, float] = {}
T = TypeVar("T")


def _pipeline(outputs: str, base: Path, remover: LocalRemover) -> Pipeline:
    settings = config.load(config_file=Path(os.devnull), env={
        "THUMBGEN_BASE_PATH": str(base), "THUMBGEN_OUTPUTS": outputs,
        "THUMBGEN_BACKGROUND_PATH": str(Path(__file__).resolve().parent.parent / "backgrounds")})
    return Pipeline(settings, remover, Metrics(CollectorRegistry()))


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    cpu0, t0 = time.process_time(), time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000, (time.process_time() - cpu0) * 1000


def run(photos: list[Path], rounds: int) -> list[str]:
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {CORE})
    try:
        return _measure(photos, rounds)
    finally:
        os.sched_setaffinity(0, before)


def _measure(photos: list[Path], rounds: int) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="outputs-") as tmp:
        probe = config.load(config_file=Path(os.devnull), env={})
        remover = LocalRemover(probe.model_path, threads=1)
        try:
            one, four = (_pipeline(o, Path(tmp), remover) for o in (ONE, FOUR))
            lines = _renders(photos, rounds, one, four)
            lines += ["", *_by_output(photos, four)]
        finally:
            remover.close()
    return lines


def _renders(photos: list[Path], rounds: int, one: Pipeline, four: Pipeline) -> list[str]:
    one.render(Job(rel=PurePosixPath("warm.jpg")), photos[0])  # model loaded, background cached
    times: dict[Path, dict[str, list[tuple[float, float]]]] = {p: {"1": [], "4": []}
                                                              for p in photos}
    parts: dict[str, list[float]] = {}
    for r in range(rounds):
        for i, photo in enumerate(photos):
            order = [("1", one), ("4", four)]
            if (r + i) % 2:
                order.reverse()
            for key, pipeline in order:
                job = Job(rel=PurePosixPath(photo.name))
                times[photo][key].append(_timed(lambda: pipeline.render(job, photo)))
                for stage, seconds in job.durations.items():
                    parts.setdefault(f"{key}:{stage}", []).append(seconds * 1000)
    rows, ratios, cpu_ratios = [], [], []
    for photo in photos:
        t1, t4 = times[photo]["1"], times[photo]["4"]
        wall1, wall4 = median(w for w, _ in t1), median(w for w, _ in t4)
        cpu1, cpu4 = median(c for _, c in t1), median(c for _, c in t4)
        ratios.append(wall4 / wall1)
        cpu_ratios.append(cpu4 / cpu1)
        rows.append((photo.stem, wall1, wall4, f"{wall4 / wall1:.2f}", cpu1, cpu4,
                     f"{cpu4 / cpu1:.2f}"))
    ratio, cpu_ratio = median(ratios), median(cpu_ratios)
    SUMMARY["outputs_ratio"], SUMMARY["outputs_cpu_ratio"] = ratio, cpu_ratio
    rows.append(("median", "", "", f"{ratio:.2f}", "", "", f"{cpu_ratio:.2f}"))
    stages = [(stage, median(parts.get(f"1:{stage}", [])), median(parts.get(f"4:{stage}", [])))
              for stage in ("validate", "remove", "compose")]
    return [
        f"  {len(photos)} photos × {rounds} rounds, core {CORE} only, 1 and 4 outputs "
        f"alternated; 1 = {ONE}, 4 = {FOUR}",
        table(["photo", "1 out ms", "4 out ms", "ratio", "1 CPU ms", "4 CPU ms", "CPU ratio"],
              rows),
        "", "  by stage (median wall ms; compose holds every output's encode and checks):",
        table(["stage", "1 output", "4 outputs"], stages),
        f"\n  target: 4 outputs ≤ {TARGET} × one → wall {ratio:.2f} "
        f"({'met' if ratio <= TARGET else 'NOT met'}), CPU {cpu_ratio:.2f} "
        f"({'met' if cpu_ratio <= TARGET else 'NOT met'})"]


def _by_output(photos: list[Path], four: Pipeline) -> list[str]:
    """Compose, encode and check of each output, timed apart (CPU) on the same photos."""
    specs = four.plan.outputs
    limits = replace(four.limits, target=working_target(specs))
    steps: dict[str, dict[str, list[float]]] = {s.name: {} for s in specs}
    sizes: dict[str, set[str]] = {s.name: set() for s in specs}
    for photo in photos:
        rgb = validate.decode(validate.read_input(photo, limits.max_bytes), limits).image
        mask = four.remover.mask(rgb)
        for spec in specs:
            cost = steps[spec.name]
            if spec.size is None:
                image, ms = _cpu(lambda: compose.cutout(rgb, mask))
                placed = None
            else:
                canvas = compose.canvas_for(spec, four.backgrounds, PurePosixPath(photo.name))
                placed, ms = _cpu(lambda: compose.place(rgb, mask, canvas, spec.fill or 0,
                                                        shadow=spec.shadow,
                                                        pure_white=spec.pure_white))
                image = placed.image
            cost.setdefault("compose", []).append(ms)
            data, ms = _cpu(lambda: encoding.encode(image, spec))
            cost.setdefault("encode", []).append(ms)
            results, ms = _cpu(lambda: checks.check(
                spec, data, spec.size or rgb.size, placed.mask if placed else None,
                placed.at if placed else (0, 0)))
            cost.setdefault("check", []).append(ms)
            cost.setdefault("KiB", []).append(len(data) / 1024)
            cost.setdefault("failed", []).append(sum(not r.ok for r in results))
            sizes[spec.name].add(f"{image.width}×{image.height}")
    rows = []
    for spec in specs:
        cost, shown = steps[spec.name], sorted(sizes[spec.name])
        rows.append((spec.name, shown[0] if len(shown) == 1 else f"{shown[0]}…",
                     median(cost["compose"]), median(cost["encode"]), median(cost["check"]),
                     f"{median(cost['KiB']):.0f}", int(sum(cost["failed"]))))
        SUMMARY[f"check_ms_{spec.name}"] = median(cost["check"])
    return ["  each output of the four, apart (median CPU ms, same photos, core 0):",
            table(["output", "size", "compose", "encode", "check", "KiB", "failed checks"],
                  rows)]


def _cpu(fn: Callable[[], T]) -> tuple[T, float]:
    cpu0 = time.process_time()
    result = fn()
    return result, (time.process_time() - cpu0) * 1000
