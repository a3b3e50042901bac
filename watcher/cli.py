"""Composition root: arguments → Settings → logging → backends → App.

This is the only module that builds backends. Each command is one small function; a bad
configuration exits with code 2 and a message naming the key and the value.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from functools import partial
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from loguru import logger

from watcher import __version__, config, messages
from watcher import logging as log_setup
from watcher.errors import ConfigError, ModelError, RejectedImage, ThumbgenError
from watcher.metrics import Metrics
from watcher.model import Job
from watcher.stages.removal.base import Remover

if TYPE_CHECKING:
    from watcher import http
    from watcher.app import App

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


# -- backends ------------------------------------------------------------------------------------

def _local(settings: config.Settings, metrics: Metrics,
           cpu_slots: threading.Semaphore) -> Remover:
    from watcher.stages.removal.local import LocalRemover

    # one model run at a time, on every CPU worker's core (see LocalRemover)
    return LocalRemover(settings.model_path, threads=settings.cpu_workers, metrics=metrics,
                        runtime_setting=settings.local_runtime,
                        on_load=lambda c: metrics.set_runtime(c.runtime, c.precision))


def _gradio(settings: config.Settings, metrics: Metrics,
            cpu_slots: threading.Semaphore) -> Remover:
    from watcher.stages.removal import gradio

    return gradio.build(settings, metrics, cpu_slots)


# short name → factory; REMOVAL_BACKEND picks one (auto: gradio when GRADIO_API_URL is set).
# A factory gets the pipeline's CPU semaphore: a remote backend's local fallback must take a slot.
BACKENDS: dict[str, Callable[[config.Settings, Metrics, threading.Semaphore], Remover]] = {
    "local": _local, "gradio": _gradio}


def build_remover(settings: config.Settings, metrics: Metrics,
                  cpu_slots: threading.Semaphore) -> Remover:
    kind = settings.removal_kind
    if kind not in BACKENDS:
        raise ConfigError("REMOVAL_BACKEND", kind, "this backend is not available in this build")
    return BACKENDS[kind](settings, metrics, cpu_slots)


# -- commands ------------------------------------------------------------------------------------

# A process's own temp folder of a daemon that is gone is removed at the next start after this.
_TMP_LEFT_FOR = 3600.0


def _private_tmp(settings: config.Settings) -> Path:
    """Point temp files (ours and our libraries': onnxruntime writes ``$TMPDIR/.ses``) at
    ``.thumbgen/tmp/<worker-id>``, so the daemon leaves nothing in /tmp, its temp files share
    the inbox's filesystem, and a clean stop can remove them all without touching another
    daemon's. Folders of daemons that are gone (no claim folder, untouched for an hour) go too."""
    root = settings.state_path / "tmp"
    tmp = root / settings.worker_id
    tmp.mkdir(parents=True, exist_ok=True)
    claimed = settings.state_path / "claimed"
    for folder in root.iterdir():
        try:
            stale = (folder.is_dir() and not folder.is_symlink() and folder != tmp
                     and not (claimed / folder.name).exists()
                     and time.time() - folder.stat().st_mtime > _TMP_LEFT_FOR)
            if stale:
                shutil.rmtree(folder)
        except OSError:
            continue
    os.environ["TMPDIR"] = str(tmp)
    tempfile.tempdir = None  # forget the cached default, re-read from TMPDIR
    return tmp


def cmd_run(settings: config.Settings, args: argparse.Namespace) -> int:
    from watcher.app import App

    tmp = _private_tmp(settings)
    metrics = Metrics()
    cpu_slots = threading.BoundedSemaphore(settings.cpu_workers)  # shared by App and remover
    remover = build_remover(settings, metrics, cpu_slots)
    app = App(settings, remover, metrics, cpu_slots)
    from watcher.scheduler import BackupGauges, Scheduler

    if settings.scheduler_enabled:  # off where a Kubernetes CronJob runs backup and cleanup
        Scheduler(settings, metrics).attach(app)
    app.on_tick.append(BackupGauges(settings, metrics))
    server = _operations(settings, app)
    app.install_signal_handlers()
    # the whole configuration as a field of the JSON log line; the console shows where to look
    logger.bind(configuration=settings.masked()).info(
        "thumbgen {} starting (worker {}); `thumbgen config` lists the configuration",
        __version__, settings.worker_id)
    try:
        return app.run()
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)  # a clean stop leaves nothing behind


def _tune_malloc_for_the_daemon() -> None:
    """Two glibc settings that keep the daemon's peak memory down (glibc only; else nothing).

    Buffers of 1 MiB and more (decoded photos, masks) come straight from mmap, so that freeing one
    gives it back: glibc's own threshold climbs to 32 MiB and leaves them in per-thread heaps
    (~40 MB more at peak with two workers on 24 MP photos). And at most two malloc arenas: glibc
    gives each busy thread (workers, onnxruntime's, the log writer's) a heap of its own, up to
    8 per core, each keeping freed memory (~30 MB more at peak). Must run before any thread
    starts: glibc fixes its arena limit when the second thread first allocates."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-8, 2)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def _operations(settings: config.Settings, app: App) -> http.Server | None:
    """Health checks, systemd notifications and the HTTP server, all hooked onto ``app``."""
    from watcher import http
    from watcher.health import Health
    from watcher.systemd import Notifier
    from watcher.web import Page

    health = Health(app)
    health.attach()
    Notifier(health.live).attach(app)
    page = Page(app)  # the shop's page at /
    page.attach()
    return http.serve(settings, health, app.metrics, page)


def cmd_health(settings: config.Settings, args: argparse.Namespace) -> int:
    from watcher import http

    report = http.fetch_health(args.url or http.daemon_url(settings), timeout=args.timeout)
    if report.document is not None:
        print(json.dumps(report.document, indent=2))
    else:
        print(f"thumbgen: {report.error}", file=sys.stderr)
    return report.code


def cmd_diagnose(settings: config.Settings, args: argparse.Namespace) -> int:
    from watcher import diagnose

    findings = diagnose.run(settings)
    for finding in findings:
        print(finding.line())
    failed = sum(f.level == diagnose.FAIL for f in findings)
    warned = sum(f.level == diagnose.WARN for f in findings)
    print(f"{failed} failure(s), {warned} warning(s)")
    return EXIT_FAILED if failed else EXIT_OK


def cmd_config(settings: config.Settings, args: argparse.Namespace) -> int:
    from watcher import mounts
    from watcher.stages.removal import runtime

    for line in settings.describe():
        print(line)
    watching = mounts.choose(settings.watch_mode, settings.upload_path)
    print(f"\nWatching {settings.upload_path}: {watching.mode} ({watching.why})")
    print(f"Local model: {runtime.plan(settings.local_runtime)}")
    print("\nWhat each photo becomes (OUTPUTS, [outputs.NAME], [folders.\"NAME\"]):")
    for line in settings.plan.describe():
        print(f"  {line}")
    return EXIT_OK


def cmd_models(settings: config.Settings, args: argparse.Namespace) -> int:
    from watcher import models

    path = models.fetch(settings.model_path)
    print(f"model ready: {path} (sha256 verified)")
    return EXIT_OK


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
    if not sys.stderr.isatty() and done not in (total,) and done % 50:
        return
    width = 30
    filled = int(width * done / max(total, 1))
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}"
                     f"  {failed_word}: {failed}")
    if done == total:
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

    def one(source: Path, rel: PurePosixPath) -> str | None:
        try:
            rendered = pipeline.render(Job(rel=rel), source)
            publish.write_set(out, [(path, data) for _, path, data in rendered.files],
                              "process")
            checked.extend((rel, problem) for problem in rendered.problems)
            return None
        except RejectedImage as exc:  # the shop's two lines, in LANGUAGE
            return " ".join(exc.shop_lines(settings.language)).strip()
        except ThumbgenError as exc:
            return getattr(exc, "reason", str(exc))
        except Exception as exc:  # one bad file never stops the pass
            logger.opt(exception=True).debug("processing {} failed", source)
            return f"{type(exc).__name__}: {exc}"

    problems: list[tuple[Path, str]] = []
    say = partial(messages.text, settings.language)
    load = getattr(remover, "load", None)
    if callable(load) and items:  # the local model's load logs a line: before the bar, not in it
        load()
    _progress(0, len(items), 0, say("process.failed"))
    with ThreadPoolExecutor(max_workers=threads) as pool:
        futures = {pool.submit(one, src, rel): src for src, rel in items}
        for n, future in enumerate(as_completed(futures), 1):
            problem = future.result()
            if problem:
                problems.append((futures[future], problem))
            _progress(n, len(items), len(problems), say("process.failed"))
    for source, problem in sorted(problems):  # after the bar, so the two never share a line
        logger.bind(file=str(source)).warning("{}: {}", source, problem)
    for rel, problem in sorted(checked):
        print(f"{rel} → {problem}")
    failed = len(problems)
    print(say("process.summary", done=len(items) - failed, folder=out, failed=failed)
          + (say("process.checks_failed", count=len(checked)) if checked else ""))
    return EXIT_FAILED if failed else EXIT_OK


# -- backups and cleanup (watcher/backup.py, restore.py, cleanup.py) -----------------------------

def _component(text: str) -> str:
    from watcher.backup import COMPONENTS

    if text not in COMPONENTS:
        raise argparse.ArgumentTypeError(f"unknown component {text!r} (one of "
                                         f"{', '.join(COMPONENTS)})")
    return text


def cmd_backup(settings: config.Settings, args: argparse.Namespace) -> int:
    from watcher import backup, restore

    try:
        if args.verify:
            set_id, problems = restore.verify_set(settings, args.verify, args.components)
            for name, found in problems.items():
                print(f"{backup.archive_name(name, set_id)}: {'FAILED' if found else 'OK'}")
                print("".join(f"  {problem}\n" for problem in found), end="")
            return EXIT_FAILED if any(problems.values()) else EXIT_OK
        report = backup.run_backup(settings, Metrics(), args.components)
    except (LookupError, backup.BackupBusy) as exc:
        print(f"thumbgen: {exc}", file=sys.stderr)
        return EXIT_FAILED
    for archive in report.archives:
        print(f"{archive.archive}  {archive.files} file(s)  {archive.size} bytes"
              f"  {archive.skipped} left out")
    for name, why in report.failed.items():
        print(f"{name}: FAILED: {why}", file=sys.stderr)
    return EXIT_FAILED if report.failed else EXIT_OK


def cmd_backups(settings: config.Settings, args: argparse.Namespace) -> int:
    from watcher import backup

    sets = backup.list_sets(settings.backup_path)
    print(f"{'ID':<16} {'SIZE':>10}  {'STATE':<10} {'VERIFIED':<9} COMPONENT=BYTES")
    for found in sets:
        states = [a.verified for a in found.archives.values()]
        verified = ("FAILED" if "failed" in states else "yes" if all(states) else
                    f"{states.count('ok')}/{len(states)}" if any(states) else "no")
        parts = [f"{n}={a.size}" + ("" if a.complete else "(incomplete)")
                 for n, a in found.archives.items()]
        print(f"{found.set_id:<16} {found.size:>10}  "
              f"{'complete' if found.complete else 'partial':<10} {verified:<9} {' '.join(parts)}")
    print(f"{len(sets)} backup set(s) in {settings.backup_path}")
    return EXIT_OK


def cmd_restore(settings: config.Settings, args: argparse.Namespace) -> int:
    from watcher import restore

    try:
        set_id, reports = restore.restore_set(settings, args.id, args.components,
                                              to=args.to.resolve() if args.to else None,
                                              force=args.force)
    except LookupError as exc:
        print(f"thumbgen: {exc}", file=sys.stderr)
        return EXIT_FAILED
    for name, report in reports.items():
        print(f"{name} ({set_id}): {len(report.restored)} restored, {len(report.unchanged)} "
              f"already there, {len(report.refused)} refused")
        print("".join(f"  refused {path}: {why}\n" for path, why in report.refused), end="")
    return EXIT_FAILED if any(r.refused for r in reports.values()) else EXIT_OK


def cmd_cleanup(settings: config.Settings, args: argparse.Namespace) -> int:
    from watcher import cleanup

    removals = cleanup.run(settings, Metrics(), dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for removal in removals:
        print(f"{verb} {removal.kind:<9} {removal.age / 86400:7.1f} d  {removal.path}")
    print(f"{len(removals)} file(s) {'would be removed' if args.dry_run else 'removed'}")
    return EXIT_OK


# -- argument parsing ----------------------------------------------------------------------------

COMMANDS: dict[str, Callable[[config.Settings, argparse.Namespace], int]] = {
    "run": cmd_run,
    "config": cmd_config,
    "models": cmd_models,
    "process": cmd_process,
    "backup": cmd_backup,
    "backups": cmd_backups,
    "restore": cmd_restore,
    "cleanup": cmd_cleanup,
    "health": cmd_health,
    "diagnose": cmd_diagnose,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="thumbgen", description="Watches a folder of product photos and publishes "
        "marketplace thumbnails with the background removed.")
    config_help = "TOML file (default: $THUMBGEN_CONFIG or config/thumbgen.toml if present)"
    parser.add_argument("--config", type=Path, help=config_help)
    # --config also after the command (`thumbgen config --config FILE`); SUPPRESS: when it is
    # not given there, the one before the command (or None) stands
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=argparse.SUPPRESS, help=config_help)
    parser.add_argument("--version", action="version", version=f"thumbgen {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return commands.add_parser(name, parents=[common], **kwargs)

    add("run", help="run the daemon")
    add("config", help="print the effective configuration, secrets masked")
    models = add("models", help="manage the local model")
    models.add_argument("action", choices=["fetch"])
    process = add("process", help="make thumbnails of files or folders, once")
    process.add_argument("paths", nargs="+", metavar="PATH")
    process.add_argument("--out", type=Path, help="output folder (default: OUTPUT_PATH)")
    backup = add("backup", help="write a backup set now, or --verify one")
    backup.add_argument("components", nargs="*", type=_component, metavar="COMPONENT",
                        help="produtos, backgrounds, thumbnails, config, logs (default: all)")
    backup.add_argument("--verify", metavar="ID", help="check the archives of set ID "
                        "against their manifests instead")
    add("backups", help="list backup sets")
    restore = add("restore", help="restore a backup set (ID or 'latest')")
    restore.add_argument("id", metavar="ID")
    restore.add_argument("components", nargs="*", type=_component, metavar="COMPONENT")
    restore.add_argument("--to", type=Path, metavar="DIR",
                         help="restore into DIR/<component> instead of the live folders")
    restore.add_argument("--force", action="store_true", help="replace existing files")
    cleanup = add("cleanup", help="remove what has passed its retention")
    cleanup.add_argument("--dry-run", action="store_true", help="list, remove nothing")
    health = add("health", help="the running daemon's /health; exit 0 healthy, "
                            "1 degraded, 2 unhealthy or unreachable")
    health.add_argument("--url", help="the daemon's base URL (default: HTTP_HOST:HTTP_PORT, or "
                        "the address file when HTTP_PORT is 0)")
    health.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    add("diagnose", help="check folders, permissions, disk, inotify, config, remote "
                   "and model; exit 1 if anything fails")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = config.load(args.config)
    except ConfigError as exc:
        print(f"thumbgen: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    quiet = args.command in ("config", "health", "diagnose")
    if args.command == "run":
        _tune_malloc_for_the_daemon()  # before the log writer's thread starts
    log_setup.setup(settings.log_level if not quiet else "WARNING",
                    settings.log_path if args.command == "run" else None,
                    secrets=settings.secret_values())
    if args.command != "diagnose":  # diagnose lists them among its findings
        for name in config.unknown_env():
            logger.warning("{} is set but is no setting, so it is ignored; check its spelling "
                           "against `thumbgen config`", name)
    try:
        return COMMANDS[args.command](settings, args)
    except ConfigError as exc:
        print(f"thumbgen: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except ModelError as exc:
        print(f"thumbgen: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `thumbgen config | head`: the reader left, nothing is wrong
        sys.stderr.close()
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))


__all__ = ["main"]
