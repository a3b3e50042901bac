"""Logging, configured once: console lines, flat JSON lines in LOG_PATH/app.log, journald.

Everything goes through loguru; the standard library's logging (watchdog, httpx, apscheduler) is
routed into it. Three sinks:

- the console (stderr): one readable line per event, coloured on a TTY;
- ``LOG_PATH/app.log``: one flat JSON object per line (``time``, ``level``, ``message``, the bound
  fields such as ``file``, ``stage``, ``outcome``, ``duration_ms``, ``stages``), rotated at 50 MB,
  kept 14 days, old files gzipped;
- journald, instead of the console, when systemd connected stderr to the journal
  (``JOURNAL_STREAM``): native entries through systemd-python, every bound field as an upper-case
  journal field (``FILE``, ``STAGE``, ``OUTCOME``, ``DURATION_MS``…), so
  ``journalctl -u thumbgen OUTCOME=rejected`` works.

Secrets never reach a sink: the message, the bound fields and tracebacks go through
``masking.mask_text`` with the configured secret values (see ``watcher/masking.py``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterable, Mapping
from datetime import timezone
from pathlib import Path
from typing import Any, TextIO

from loguru import logger

from watcher.errors import FolderError, make_folder
from watcher.masking import mask_text

LOG_FILE = "app.log"
ROTATION = "50 MB"
RETENTION = "14 days"
COMPRESSION = "gz"
SYSLOG_IDENTIFIER = "thumbgen"

# the file is in the message already; the JSON and journald sinks carry it as a field
CONSOLE_FORMAT = ("<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> <level>{level: <7}</level> "
                  "{message}")
# loguru level → syslog priority (journald's PRIORITY field)
_PRIORITY = {"TRACE": 7, "DEBUG": 7, "INFO": 6, "SUCCESS": 5, "WARNING": 4, "ERROR": 3,
             "CRITICAL": 2}
# Keys the formatters stash in a record; underscore keys are never written as fields.
_JSON_KEY = "_json"
_TRACEBACK_KEY = "_traceback"


# -- secrets ---------------------------------------------------------------------------------------

class Redactor:
    """Masks secrets (``masking.mask_text`` with the known ``secrets``) in text and,
    recursively, in bound fields."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.values = tuple(secrets)

    def text(self, text: str) -> str:
        return mask_text(text, self.values)

    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value

    def patch(self, record: dict[str, Any]) -> None:
        """loguru patcher: runs once per event, before any sink sees it."""
        extra = record["extra"]
        extra.setdefault("file", "")
        record["message"] = self.text(record["message"])
        for key, value in extra.items():
            if not isinstance(value, int | float | bool):
                extra[key] = self.value(value)


def _exception_text(record: Mapping[str, Any], redact: Redactor) -> str:
    if not record["exception"]:
        return ""
    kind, value, tb = record["exception"]
    return redact.text("".join(traceback.format_exception(kind, value, tb)).rstrip())


def _fields(record: Mapping[str, Any]) -> dict[str, Any]:
    """The bound fields worth writing: non-empty, not internal."""
    return {k: v for k, v in record["extra"].items()
            if not k.startswith("_") and v not in ("", None)}


# -- the JSON file ---------------------------------------------------------------------------------

def json_line(record: Mapping[str, Any], redact: Redactor) -> str:
    """One flat JSON object: fixed keys first, then every bound field at the top level."""
    doc: dict[str, Any] = {
        "time": record["time"].astimezone(timezone.utc).isoformat(timespec="milliseconds"),
        "level": record["level"].name,
        "message": record["message"],
        "logger": record["name"],
        "function": record["function"],
        "line": record["line"],
        "process": record["process"].id,
        "thread": record["thread"].name,
    }
    for key, value in _fields(record).items():
        doc.setdefault(key, value)
    exception = _exception_text(record, redact)
    if exception:
        doc["exception"] = exception
    return json.dumps(doc, ensure_ascii=False, default=str)


def _json_formatter(redact: Redactor) -> Callable[[dict[str, Any]], str]:
    # loguru formats with str.format_map: the JSON (full of braces) goes in through a field.
    def format_record(record: dict[str, Any]) -> str:
        record["extra"][_JSON_KEY] = json_line(record, redact)
        return "{extra[" + _JSON_KEY + "]}\n"
    return format_record


def _console_formatter(redact: Redactor) -> Callable[[dict[str, Any]], str]:
    # A format function, not a string: loguru then appends no traceback of its own (its own
    # would go out unmasked); the one appended here has been through the redactor.
    def format_record(record: dict[str, Any]) -> str:
        exception = _exception_text(record, redact)
        if not exception:
            return CONSOLE_FORMAT + "\n"
        record["extra"][_TRACEBACK_KEY] = exception
        return CONSOLE_FORMAT + "\n{extra[" + _TRACEBACK_KEY + "]}\n"
    return format_record


# -- journald --------------------------------------------------------------------------------------

def under_journald(env: Mapping[str, str] | None = None, stream: TextIO | None = None) -> bool:
    """True when systemd connected ``stream`` (stderr) to the journal.

    systemd sets ``JOURNAL_STREAM=<device>:<inode>`` of that connection; a child whose stderr was
    redirected elsewhere inherits the variable, so it is compared with the stream itself.
    """
    env = os.environ if env is None else env
    value = env.get("JOURNAL_STREAM", "")
    stream = sys.stderr if stream is None else stream
    try:
        device, inode = (int(part) for part in value.split(":"))
        st = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (device, inode)


def journal_field(key: str) -> str | None:
    """A bound field's journal name: upper case, letters, digits and ``_``, not leading ``_``."""
    name = re.sub(r"[^A-Z0-9_]", "_", key.upper()).lstrip("_")[:64]
    if not name or name[0].isdigit():
        return None
    return name


class JournalSink:
    """A loguru sink writing native journal entries with structured fields.

    ``send`` is ``systemd.journal.send``; if the journal socket is gone (journald restarting), the
    line goes to ``fallback`` (stderr, which systemd also reads) instead of being lost.
    """

    def __init__(self, send: Callable[..., Any], redact: Redactor,
                 fallback: TextIO | None = None) -> None:
        self.send = send
        self.redact = redact
        self.fallback = fallback or sys.stderr

    def __call__(self, message: Any) -> None:
        record = message.record
        text = record["message"]
        exception = _exception_text(record, self.redact)
        if exception:
            text = f"{text}\n{exception}"
        fields: dict[str, Any] = {}
        for key, value in _fields(record).items():
            name = journal_field(key)
            if name and name not in fields:
                fields[name] = value if isinstance(value, str | int | float) else json.dumps(
                    value, default=str)
        fields.update(
            PRIORITY=_PRIORITY.get(record["level"].name, 6),
            SYSLOG_IDENTIFIER=SYSLOG_IDENTIFIER,
            LOGGER=record["name"],
            THREAD=record["thread"].name,
        )
        try:
            self.send(text, CODE_FILE=record["file"].path, CODE_LINE=record["line"],
                      CODE_FUNC=record["function"], **fields)
        except OSError:
            self.fallback.write(f"{record['level'].name} {text}\n")


def _journal_send() -> Callable[..., Any] | None:
    try:
        from systemd import journal
    except ImportError:
        return None
    return journal.send


# -- setup -----------------------------------------------------------------------------------------

class _InterceptHandler(logging.Handler):
    """Send standard-library log records to loguru."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(depth=6, exception=record.exc_info).log(level, "{}: {}", record.name,
                                                           record.getMessage())


def setup(level: str = "INFO", log_dir: Path | None = None, secrets: Iterable[str] = (),
          json_console: bool = False, env: Mapping[str, str] | None = None,
          journal_send: Callable[..., Any] | None = None) -> None:
    """(Re)configure every sink. Call once at start-up, from the composition root.

    ``json_console`` writes the console as JSON lines too (containers whose log collector wants
    JSON). ``journal_send`` replaces ``systemd.journal.send`` (tests).
    """
    level = level.upper()
    redact = Redactor(secrets)
    logger.remove()
    logger.configure(patcher=redact.patch, extra={"file": ""})
    journald = under_journald(env)
    send = journal_send or (_journal_send() if journald else None)
    if send is not None:
        logger.add(JournalSink(send, redact), level=level, format="{message}")
    elif json_console:
        logger.add(sys.stderr, level=level, format=_json_formatter(redact))
    else:
        logger.add(sys.stderr, level=level, format=_console_formatter(redact),
                   colorize=sys.stderr.isatty(), backtrace=False, diagnose=False)
    if log_dir is not None:
        make_folder(log_dir, "LOG_PATH")  # FolderError (exit 2) if it cannot be
        try:  # enqueue: a slow disk delays the writer thread, never a worker
            logger.add(log_dir / LOG_FILE, level=level, format=_json_formatter(redact),
                       rotation=ROTATION, retention=RETENTION, compression=COMPRESSION,
                       enqueue=True, backtrace=False, diagnose=False)
        except OSError as exc:  # the folder is there but not the daemon's to write in
            raise FolderError("LOG_PATH", log_dir, exc, writing=True) from None
    logging.basicConfig(handlers=[_InterceptHandler()], level=logging.WARNING, force=True)
    for noisy in ("httpx", "httpcore", "apscheduler", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if journald and send is None:
        logger.warning("stderr goes to the journal but systemd-python is missing: plain lines, "
                       "no structured fields (pip install 'thumbgen[systemd]')")


__all__ = ["setup", "Redactor", "JournalSink", "json_line", "under_journald", "journal_field"]
