"""Benchmark of the remote stage: cut-outs per second against a Gradio server that answers in 1 s.

A real Gradio server (``tests/gradio_app.py``, so the ``test`` extra must be installed) runs on
127.0.0.1 with room for 10 calls at once and sleeps ``--latency`` seconds per call, like a busy
Space. For each ``MAX_CONCURRENT_REQUESTS`` the remover is driven by more threads than it allows
in flight, as the daemon's pool does, and the throughput is compared with the bound,
concurrency ÷ latency:

- ``remote``: ``RemoteRemover.mask()`` alone (cache off): the measure issue 3 sets a target for;
- ``render`` (with ``--render``): the daemon's ``Pipeline.render()`` (validate, remove, compose)
  on the sample photos, with the daemon's thread pool and CPU semaphore. Informative only: on a
  small machine the test server's own image work shares the cores with the daemon's.

The photos are small (``--size``, 320×240 by default) because the test server shares this
machine's cores with the client: with bigger photos its own decoding and encoding (~50 ms of CPU
a call) stretches its answers past the 1 s it is meant to take once many run at once, and the
bench would measure the server. ``call median s`` shows what one call really took.

Usage: ``python bench/remote.py [--latency 1.0] [--rounds 5] [--concurrency 1 4 8] [--size 320x240]
[--render]``. Exit status 1 when a ``remote`` row is below the target.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

from loguru import logger
from PIL import Image
from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.gradio_app import GradioServer  # noqa: E402
from watcher import config  # noqa: E402
from watcher.metrics import Metrics  # noqa: E402
from watcher.model import Job  # noqa: E402
from watcher.pipeline import Pipeline  # noqa: E402
from watcher.stages.removal import gradio  # noqa: E402
from watcher.stages.removal.resilient import RemoteRemover  # noqa: E402

TARGET = 0.8
SERVER_CONCURRENCY = 10
PRODUCTS = ROOT / "tests" / "data" / "products"


def settings_for(base: Path, url: str, concurrency: int) -> config.Settings:
    (base / "empty.toml").touch()
    return config.load(env={
        "THUMBGEN_CONFIG": str(base / "empty.toml"), "THUMBGEN_BASE_PATH": str(base),
        "THUMBGEN_GRADIO_API_URL": url, "THUMBGEN_MAX_CONCURRENT_REQUESTS": str(concurrency),
        "THUMBGEN_CACHE_ENABLED": "false", "THUMBGEN_GRADIO_FALLBACK_ENABLED": "false",
        "THUMBGEN_GRADIO_TIMEOUT": "30"})


def photo(n: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A red box on white; ``n`` makes the pixels, hence the upload, differ."""
    w, h = size
    image = Image.new("RGB", size, (255, 255, 255))
    image.paste((200, 30 + n % 200, 30), (w // 4, h // 4, 3 * w // 4, 3 * h // 4))
    return image


def run_remote(remover: RemoteRemover, calls: int, threads: int, latencies: list[float],
               size: tuple[int, int]) -> float:
    """``calls`` cut-outs from ``threads`` threads; ``latencies`` gets each remote call's time
    (from its turn to its mask: not the wait for a place among the calls in flight)."""
    backend = remover.remote
    cutout = backend.cutout

    def timed(image: Image.Image) -> Image.Image:
        start = time.perf_counter()
        try:
            return cutout(image)
        finally:
            latencies.append(time.perf_counter() - start)

    backend.cutout = timed  # type: ignore[method-assign]
    images = [photo(n, size) for n in range(calls)]
    start = time.perf_counter()
    try:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(remover.mask, images))
    finally:
        del backend.cutout  # type: ignore[attr-defined]
    return time.perf_counter() - start


def run_render(settings: config.Settings, remover: RemoteRemover, calls: int) -> float:
    cpu = threading.BoundedSemaphore(settings.cpu_workers)
    pipeline = Pipeline(settings, remover, remover.metrics, cpu)
    sources = itertools.islice(itertools.cycle(sorted(PRODUCTS.glob("*.jpg"))), calls)
    threads = settings.cpu_workers + settings.max_concurrent_requests  # as App sizes its pool

    def one(source: Path) -> None:
        pipeline.render(Job(rel=PurePosixPath(source.name)), source)

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, sources))
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=1.0, help="seconds per server call")
    parser.add_argument("--rounds", type=int, default=5, help="calls = rounds × concurrency")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--size", default="320x240", help="photo size, WxH (default 320x240)")
    parser.add_argument("--render", action="store_true", help="add the full-render rows")
    args = parser.parse_args()
    width, height = (int(side) for side in args.size.lower().split("x"))
    logger.remove()
    logger.add(sys.stderr, level="WARNING")

    work = Path(tempfile.mkdtemp(prefix="thumbgen-bench-"))
    server = GradioServer(work / "server", concurrency=SERVER_CONCURRENCY).start()
    missed = 0
    try:
        server.set(delay=args.latency)
        print(f"remote stage against a local Gradio server answering in {args.latency:g} s, "
              f"{SERVER_CONCURRENCY} calls at once; {width}×{height} photos; "
              f"{os.cpu_count()} CPU(s), load {os.getloadavg()[0]:.1f}; "
              f"target ≥ {TARGET} of the bound")
        print(f"{'MAX_CONCURRENT_REQUESTS':>23}  {'stage':<6}  {'calls':>5}  {'seconds':>7}  "
              f"{'per s':>6}  {'bound/s':>7}  {'fraction':>8}  {'peak':>4}  call median s")
        for concurrency in args.concurrency:
            base = work / f"c{concurrency}"
            base.mkdir()
            settings = settings_for(base, server.url, concurrency)
            remover = gradio.build(settings, Metrics(CollectorRegistry()))
            remover.mask(photo(10_000))  # builds the client: not part of the measure
            calls = args.rounds * concurrency
            bound = concurrency / args.latency
            for stage in ("remote", "render") if args.render else ("remote",):
                server.reset()
                server.set(delay=args.latency)
                latencies: list[float] = []
                if stage == "remote":
                    seconds = run_remote(remover, calls, concurrency + 2, latencies,
                                         (width, height))
                else:
                    seconds = run_render(settings, remover, calls)
                rate = calls / seconds
                fraction = rate / bound
                missed += stage == "remote" and fraction < TARGET
                print(f"{concurrency:>23}  {stage:<6}  {calls:>5}  {seconds:>7.2f}  "
                      f"{rate:>6.2f}  {bound:>7.2f}  {fraction:>8.2f}  "
                      f"{server.stats()['peak']:>4}  "
                      f"{statistics.median(latencies) if latencies else float('nan'):>13.3f}")
            remover.close()
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
