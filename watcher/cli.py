"""Composition root: arguments → Settings → logging → backends → App.

This is the only module that builds backends. Each command is one small function; a bad
configuration exits with code 2 and a message naming the key and the value.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path, PurePosixPath

from loguru import logger

from watcher import __version__, config
from watcher import logging as log_setup
from watcher.errors import ConfigError, ModelError, ThumbgenError
from watcher.metrics import Metrics
from watcher.model import Job
from watcher.stages.removal.base import Remover

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


# -- backends ------------------------------------------------------------------------------------

def _local(settings: config.Settings, metrics: Metrics) -> Remover:
    from watcher.stages.removal.local import LocalRemover

    return LocalRemover(settings.model_path, threads=1)


# short name → factory; REMOVAL_BACKEND picks one (auto: gradio when GRADIO_API_URL is set)
BACKENDS: dict[str, Callable[[config.Settings, Metrics], Remover]] = {"local": _local}


def build_remover(settings: config.Settings, metrics: Metrics) -> Remover:
    kind = settings.removal_kind
    if kind not in BACKENDS:
        raise ConfigError("REMOVAL_BACKEND", kind, "this backend is not available in this build")
    return BACKENDS[kind](settings, metrics)


# -- commands ------------------------------------------------------------------------------------

def cmd_run(settings: config.Settings, args: argparse.Namespace) -> int:
    from watcher.app import App

    metrics = Metrics()
    remover = build_remover(settings, metrics)
    app = App(settings, remover, metrics)
    app.install_signal_handlers()
    logger.info("thumbgen {} starting (worker {}), configuration: {}", __version__,
                settings.worker_id, settings.masked())
    return app.run()


def cmd_config(settings: config.Settings, args: argparse.Namespace) -> int:
    width = max(len(key) for key in config.option_names())
    for key, value in settings.masked().items():
        print(f"{key:<{width}}  {value}    # {settings.sources.get(key, '')}")
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


def _progress(done: int, total: int, failed: int) -> None:
    if not sys.stderr.isatty() and done not in (total,) and done % 50:
        return
    width = 30
    filled = int(width * done / max(total, 1))
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}"
                     f"  failed: {failed}")
    if done == total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def cmd_process(settings: config.Settings, args: argparse.Namespace) -> int:
    """One pass over files or folders; inputs are read, never moved or changed."""
    from watcher.pipeline import Pipeline
    from watcher.stages import publish

    out = (args.out or settings.output_path).resolve()
    metrics = Metrics()
    pipeline = Pipeline(settings, build_remover(settings, metrics), metrics)
    items = _inputs([Path(p) for p in args.paths])
    failed = 0

    def one(source: Path, rel: PurePosixPath) -> str | None:
        try:
            rendered = pipeline.render(Job(rel=rel), source)
            publish.write_atomic(out, rendered.rel, rendered.data, "process")
            return None
        except ThumbgenError as exc:
            return getattr(exc, "reason", str(exc))
        except Exception as exc:  # one bad file never stops the pass
            logger.opt(exception=True).debug("processing {} failed", source)
            return f"{type(exc).__name__}: {exc}"

    _progress(0, len(items), 0)
    with ThreadPoolExecutor(max_workers=settings.cpu_workers) as pool:
        futures = {pool.submit(one, src, rel): src for src, rel in items}
        for n, future in enumerate(as_completed(futures), 1):
            problem = future.result()
            if problem:
                failed += 1
                logger.bind(file=str(futures[future])).warning("{}: {}", futures[future], problem)
            _progress(n, len(items), failed)
    print(f"{len(items) - failed} thumbnail(s) written to {out}, {failed} failed")
    return EXIT_FAILED if failed else EXIT_OK


# -- argument parsing ----------------------------------------------------------------------------

COMMANDS: dict[str, Callable[[config.Settings, argparse.Namespace], int]] = {
    "run": cmd_run,
    "config": cmd_config,
    "models": cmd_models,
    "process": cmd_process,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="thumbgen", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, help="TOML file (default: $THUMBGEN_CONFIG or "
                        "config/thumbgen.toml if present)")
    parser.add_argument("--version", action="version", version=f"thumbgen {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("run", help="run the daemon")
    sub.add_parser("config", help="print the effective configuration, secrets masked")
    models = sub.add_parser("models", help="manage the local model")
    models.add_argument("action", choices=["fetch"])
    process = sub.add_parser("process", help="make thumbnails of files or folders, once")
    process.add_argument("paths", nargs="+", metavar="PATH")
    process.add_argument("--out", type=Path, help="output folder (default: OUTPUT_PATH)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = config.load(args.config)
    except ConfigError as exc:
        print(f"thumbgen: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    quiet = args.command in ("config",)
    log_setup.setup(settings.log_level if not quiet else "WARNING",
                    settings.log_path if args.command == "run" else None,
                    secrets=[settings.gradio_token])
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))


__all__ = ["main"]
