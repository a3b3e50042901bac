"""Logging, configured once: readable console lines, JSON lines in LOG_PATH/app.log.

Everything goes through loguru; the standard library's logging (watchdog, httpx, apscheduler) is
routed into it. Secrets never reach a sink: ``redact`` masks every configured secret value.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from loguru import logger

CONSOLE_FORMAT = ("<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> <level>{level: <7}</level> "
                  "<cyan>{extra[file]}</cyan> {message}")


class _InterceptHandler(logging.Handler):
    """Send standard-library log records to loguru."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(depth=6, exception=record.exc_info).log(level, "{}: {}", record.name,
                                                           record.getMessage())


def _redactor(secrets: Iterable[str]) -> Any:
    values = [s for s in secrets if s and len(s) >= 4]

    def patch(record: dict[str, Any]) -> None:
        record["extra"].setdefault("file", "")
        if values:
            message = record["message"]
            for value in values:
                message = message.replace(value, "****")
            record["message"] = message
    return patch


def setup(level: str = "INFO", log_dir: Path | None = None, secrets: Iterable[str] = (),
          json_console: bool = False) -> None:
    """(Re)configure every sink. Call once at start-up, from the composition root."""
    level = level.upper()
    logger.remove()
    logger.configure(patcher=_redactor(secrets), extra={"file": ""})
    if json_console:
        logger.add(sys.stderr, level=level, serialize=True)
    else:
        logger.add(sys.stderr, level=level, format=CONSOLE_FORMAT, colorize=sys.stderr.isatty(),
                   backtrace=False, diagnose=False)
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        logger.add(log_dir / "app.log", level=level, serialize=True, rotation="50 MB",
                   retention="14 days", compression="gz", enqueue=True, backtrace=False,
                   diagnose=False)
    logging.basicConfig(handlers=[_InterceptHandler()], level=logging.WARNING, force=True)
    for noisy in ("httpx", "httpcore", "apscheduler", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
