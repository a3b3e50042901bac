"""Section 10: the whole pipeline against the model's own ceiling, alternated in one run.

Both are measured in one process (a child of the bench, with glibc's malloc set up as ``thumbgen
run`` sets it) with the very remover the daemon builds (the same runtime, session and thread
settings), on the same cores, in rounds that alternate which goes first:

- **ceiling**: ``WORKERS`` threads calling ``remover.mask`` on the photos already reduced to the
  network's input size (320×320: no resize before it, none after), so nothing but the model
  runs; runs per second;
- **pipeline**: ``WORKERS`` threads doing what ``thumbgen process`` does for each 12 MP photo —
  ``Pipeline.render`` (read, validate and decode, mask, refine, compose, encode, check) and
  ``publish.write_set`` (temp file, fsync, rename) into a temp folder; images per second.

The ratio pipeline ÷ ceiling is the share of the cores the pipeline leaves to the model. On a
machine other work shares, wall-clock rates are noisy; the CPU time of this process per image
is not: ``model CPU per run ÷ pipeline CPU per image`` is the ratio the pipeline reaches when it
has the cores to itself. Then one photo at a time on core 0, the CPU time of each step: where
the rest of the time goes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import TypeVar

from PIL import Image

from report import median, table
from watcher import config, encoding
from watcher.cli import build_remover
from watcher.metrics import Metrics
from watcher.model import Job
from watcher.pipeline import Pipeline, working_target
from watcher.stages import compose as compose_stage
from watcher.stages import publish, refine, validate
from watcher.stages.removal.base import Remover

TARGET = 0.9
SUMMARY: dict[str, float] = {}
T = TypeVar("T")
MODEL = "  model alone (mask of the 320² photo)"
MASK = "mask (pre-process, model, post-process)"


def _settings() -> config.Settings:
    return config.load(config_file=Path(os.devnull),
                       env={"THUMBGEN_REMOVAL_BACKEND": "local", "THUMBGEN_WORKERS": "2"})


def _in_threads(count: int, items: list[T], work: Callable[[T], object]) -> float:
    """Run ``work`` over ``items`` on ``count`` threads taking the next item as they free up;
    the wall seconds it took."""
    lock, queue = threading.Lock(), list(reversed(items))

    def loop() -> None:
        while True:
            with lock:
                if not queue:
                    return
                item = queue.pop()
            work(item)

    threads = [threading.Thread(target=loop) for _ in range(count)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start


def run(photos: list[Path], rounds: int) -> list[str]:
    """The section, measured in a child process that sets glibc's malloc up as ``thumbgen run``
    does (before any thread starts): its memory settings are part of the daemon's cost."""
    done = subprocess.run([sys.executable, __file__, str(rounds), *map(str, photos)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=1800)
    lines = done.stdout.rstrip().splitlines()
    if done.returncode or not lines or not lines[-1].startswith("{"):
        return lines + [f"  bench/ceiling.py exited {done.returncode}"]
    SUMMARY.update(json.loads(lines[-1]))
    return lines[:-1]


def _measure(photos: list[Path], rounds: int) -> list[str]:
    settings = _settings()
    metrics = Metrics()
    slots = threading.BoundedSemaphore(settings.cpu_workers)
    remover = build_remover(settings, metrics, slots)
    pipeline = Pipeline(settings, remover, metrics, slots)
    workers = settings.cpu_workers
    limits = replace(pipeline.limits, target=working_target(settings.plan.outputs))
    small = [validate.decode(validate.read_input(p, limits.max_bytes), limits).image
             .resize((320, 320), Image.Resampling.LANCZOS) for p in photos]
    remover.mask(small[0])  # loads the model and lets the runtime allocate its buffers
    out = Path(tempfile.mkdtemp(prefix="thumbgen-ceiling-"))
    jobs = [(p, PurePosixPath(f"{i:03d}.jpg")) for i, p in enumerate(photos)]

    def one(item: tuple[Path, PurePosixPath]) -> None:
        source, rel = item
        rendered = pipeline.render(Job(rel=rel), source)
        publish.write_set(out, [(path, data) for _, path, data in rendered.files], "bench")

    def ceiling() -> tuple[float, float]:
        c0 = time.process_time()
        wall = _in_threads(workers, small, remover.mask)
        return len(small) / wall, (time.process_time() - c0) / len(small)

    def whole() -> tuple[float, float]:
        c0 = time.process_time()
        wall = _in_threads(workers, jobs, one)
        return len(jobs) / wall, (time.process_time() - c0) / len(jobs)

    rows, ratios, cpu_ratios = [], [], []
    try:
        one(jobs[0])  # the background canvas is cached, the first output written
        for r in range(rounds):
            load = os.getloadavg()[0]
            order = (("ceiling", ceiling), ("pipeline", whole))
            measured = dict((name, fn()) for name, fn in (order if r % 2 == 0 else order[::-1]))
            (c_rate, c_cpu), (p_rate, p_cpu) = measured["ceiling"], measured["pipeline"]
            ratios.append(p_rate / c_rate)
            cpu_ratios.append(c_cpu / p_cpu)
            rows.append((r + 1, "ceiling first" if r % 2 == 0 else "pipeline first",
                         f"{c_rate:.2f}", f"{p_rate:.2f}", f"{ratios[-1]:.2f}",
                         round(c_cpu * 1000), round(p_cpu * 1000), f"{cpu_ratios[-1]:.2f}",
                         f"{load:.1f}"))
        steps = _steps(pipeline, remover, photos[:9], small[:9])
    finally:
        shutil.rmtree(out, ignore_errors=True)
        remover.close()
    SUMMARY["ceiling_ratio"] = median(ratios)
    SUMMARY["ceiling_cpu_ratio"] = median(cpu_ratios)
    verdict = "met" if median(ratios) >= TARGET else "NOT met"
    return [
        f"  {len(photos)} photos of 12 MP, {workers} threads ({remover.name} remover as "
        f"the daemon builds it, the daemon's malloc settings), {rounds} rounds alternating "
        "which goes first",
        table(["round", "order", "ceiling runs/s", "pipeline img/s", "ratio",
               "model CPU ms/run", "pipeline CPU ms/img", "CPU ratio", "load"], rows),
        f"  target: pipeline ≥ {TARGET} × the model's ceiling → {median(ratios):.2f} ({verdict});"
        f" by CPU time (the cores to itself): {median(cpu_ratios):.2f}",
        "",
        "  one photo at a time on core 0, CPU ms per step (median of "
        f"{len(photos[:9])} photos):",
        steps,
    ]


def _steps(pipeline: Pipeline, remover: Remover, photos: list[Path],
           small: list[Image.Image]) -> str:
    """The pipeline's steps apart, as ``Pipeline.render`` runs them, CPU time on core 0 (of the
    whole process: the runtime's own threads count, and nothing else of ours runs meanwhile)."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {0})
    spec = pipeline.plan.outputs[0]
    limits = replace(pipeline.limits, target=working_target(pipeline.plan.outputs))
    times: dict[str, list[float]] = {}

    def timed(name: str, fn: Callable[[], T]) -> T:
        c0 = time.process_time()
        value = fn()
        times.setdefault(name, []).append((time.process_time() - c0) * 1000)
        return value

    try:
        for path, im320 in zip(photos, small):
            data = timed("read the file", lambda: validate.read_input(path, limits.max_bytes))
            rgb = timed("validate: decode (JPEG draft), EXIF, ICC",
                        lambda: validate.decode(data, limits).image)
            timed(MODEL, lambda: remover.mask(im320))
            mask = timed(MASK, lambda: remover.mask(rgb))
            refined = timed("refine", lambda: refine.refine(mask, rgb))
            anchor = timed("touching_edges", lambda: refine.touching_edges(refined))
            canvas = compose_stage.canvas_for(spec, pipeline.backgrounds, PurePosixPath("x.jpg"))
            placed = timed("place (trim, resize, paste)", lambda: compose_stage.place(
                rgb, refined, canvas, spec.fill or 0.8, anchor,
                shadow=spec.shadow, pure_white=spec.pure_white))
            timed("encode", lambda: encoding.encode(placed.image, spec))
    finally:
        os.sched_setaffinity(0, before)
    model, whole_mask = median(times[MODEL]), median(times[MASK])
    rows = [(name, round(median(v), 1)) for name, v in times.items()]
    # the mask's own pre- and post-processing count as the rest; the model's run does not
    rest = max(0.0, whole_mask - model) + sum(
        median(v) for name, v in times.items()
        if name not in (MODEL, MASK))
    rows.append(("everything but the model", round(rest, 1)))
    return (table(["step", "CPU ms"], rows) + f"\n  at most {model / (model + rest):.2f} of the "
            "cores can go to the model when every step runs once per photo")


if __name__ == "__main__":
    from watcher.cli import _tune_malloc_for_the_daemon

    _tune_malloc_for_the_daemon()
    for line in _measure([Path(p) for p in sys.argv[2:]], int(sys.argv[1])):
        print(line, flush=True)
    print(json.dumps(SUMMARY))
