"""Composition root: arguments → Settings → logging → backends → App.

``backends.py`` is the only module that builds backends; each command is one small function, in
``daemon.py`` (run, health, diagnose, config, models), ``process.py`` and ``backups.py``; here,
the arguments and ``main``. A bad configuration exits with code 2 and a message naming the key
and the value; so does a folder the daemon cannot create (``FolderError``), naming the folder.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loguru import logger

from watcher import __version__, config
from watcher import logging as log_setup
from watcher.cli.backends import BACKENDS, build_remover
from watcher.cli.backups import _component, cmd_backup, cmd_backups, cmd_cleanup, cmd_restore
from watcher.cli.daemon import (_tune_malloc_for_the_daemon, cmd_config, cmd_diagnose, cmd_health,
                                cmd_models, cmd_run)
from watcher.cli.exits import EXIT_CONFIG, EXIT_FAILED, EXIT_OK
from watcher.cli.process import cmd_process
from watcher.errors import ConfigError, ModelError


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
    try:
        log_setup.setup(settings.log_level if not quiet else "WARNING",
                        settings.log_path if args.command == "run" else None,
                        secrets=settings.secret_values())
    except ConfigError as exc:  # LOG_PATH cannot be created (FolderError)
        print(f"thumbgen: {exc}", file=sys.stderr)
        return EXIT_CONFIG
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


__all__ = ["BACKENDS", "EXIT_CONFIG", "EXIT_FAILED", "EXIT_OK", "build_parser", "build_remover",
           "main"]
