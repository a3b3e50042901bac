"""``thumbgen process``: thumbnails of files or folders, once, with a progress line."""

from __future__ import annotations

import argparse
import sys
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from functools import partial
from pathlib import Path, PurePosixPath

from loguru import logger

from watcher import config, messages
from watcher.cli.backends import build_remover
from watcher.cli.exits import EXIT_FAILED, EXIT_OK
from watcher.errors import RejectedImage, ThumbgenError
from watcher.metrics import Metrics
from watcher.model import Job


def _inputs(paths: list[Path]) -> list[tuple[Path, PurePosixPath]]:
    """(file, relative output path) for every file named or found under a folder named."""
    from watcher.scan import scan

    found: list[tuple[Path, PurePosixPath]] = []
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            root = path.resolve()
            found += [(root / rel, rel) for rel in sorted(scan(root))]
        else:
            found.append((path, PurePosixPath(path.name)))
    return found


def _progress(done: int, total: int, failed: int, failed_word: str = "failed") -> None:
    """A bar redrawn in place on a terminal; elsewhere (a log, a pipe) a line every 50 files."""
    tty = sys.stderr.isatty()
    if not tty and done not in (total,) and done % 50:
        return
    width = 30
    filled = int(width * done / max(total, 1))
    sys.stderr.write(f"{chr(13) if tty else ''}[{'#' * filled}{'.' * (width - filled)}] "
                     f"{done}/{total}  {failed_word}: {failed}")
    if done == total or not tty:
        sys.stderr.write("\n")
    sys.stderr.flush()


def cmd_process(settings: config.Settings, args: argparse.Namespace) -> int:
    """One pass over files or folders; inputs are read, never moved or changed."""
    from watcher.pipeline import Pipeline
    from watcher.stages import publish

    out = (args.out or settings.output_path).resolve()
    metrics = Metrics()
    cpu_slots = threading.BoundedSemaphore(settings.cpu_workers)
    remover = build_remover(settings, metrics, cpu_slots)
    pipeline = Pipeline(settings, remover, metrics, cpu_slots)
    # like the daemon: remote calls wait on the network, so more threads than CPU slots
    threads = settings.cpu_workers + (0 if remover.cpu_bound else settings.max_concurrent_requests)
    items = _inputs([Path(p) for p in args.paths])
    checked: list[tuple[PurePosixPath, str]] = []  # failed output checks: published all the same

    def one(source: Path, rel: PurePosixPath) -> tuple[str | None, int]:
        """(what went wrong or None, how many files it wrote: one per output)."""
        try:
            rendered = pipeline.render(Job(rel=rel), source)
            publish.write_set(out, [(path, data) for _, path, data in rendered.files],
                              "process")
            checked.extend((rel, problem) for problem in rendered.problems)
            return None, len(rendered.files)
        except RejectedImage as exc:  # the shop's two lines, in LANGUAGE
            return " ".join(exc.shop_lines(settings.language)).strip(), 0
        except ThumbgenError as exc:
            return getattr(exc, "reason", str(exc)), 0
        except Exception as exc:  # one bad file never stops the pass
            logger.opt(exception=True).debug("processing {} failed", source)
            return f"{type(exc).__name__}: {exc}", 0

    problems: list[tuple[Path, str]] = []
    written = 0
    say = partial(messages.text, settings.language)
    load = getattr(remover, "load", None)
    if callable(load) and items:  # the local model's load logs a line: before the bar, not in it
        load()
    _progress(0, len(items), 0, say("process.failed"))
    with ThreadPoolExecutor(max_workers=threads) as pool:
        futures = {pool.submit(one, src, rel): src for src, rel in items}
        for n, future in enumerate(as_completed(futures), 1):
            problem, files = future.result()
            written += files
            if problem:
                problems.append((futures[future], problem))
            _progress(n, len(items), len(problems), say("process.failed"))
    for source, problem in sorted(problems):  # after the bar, so the two never share a line
        logger.bind(file=str(source)).warning("{}: {}", source, problem)
    for rel, problem in sorted(checked):
        print(f"{rel} → {problem}")
    failed = len(problems)
    print(say("process.summary", files=written, done=len(items) - failed, folder=out,
              failed=failed)
          + (say("process.checks_failed", count=len(checked)) if checked else ""))
    return EXIT_FAILED if failed else EXIT_OK
