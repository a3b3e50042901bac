"""Configuration values: parsers (a raw value from TOML or the environment → a typed value, or
ValueError) and checks on the typed value (None, or what is wrong). ``options.py`` names one of
each per key."""

from __future__ import annotations

import importlib.util
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1000, "kib": 1024, "m": 1024**2, "mb": 1000**2,
               "mib": 1024**2, "g": 1024**3, "gb": 1000**3, "gib": 1024**3}
# (name, lowest, highest, names): seconds (six-field form only), then the five crontab fields.
_CronField = tuple[str, int, int, tuple[str, ...]]
_CRON_FIELDS: tuple[_CronField, ...] = (
    ("second", 0, 59, ()), ("minute", 0, 59, ()), ("hour", 0, 23, ()), ("day", 1, 31, ()),
    ("month", 1, 12, ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct",
                      "nov", "dec")),
    ("weekday", 0, 7, ("sun", "mon", "tue", "wed", "thu", "fri", "sat")))
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


# ---------------------------------------------------------------------------------------------
# Parsers: raw value (from TOML or a string from the environment) → typed value, or ValueError.
# ---------------------------------------------------------------------------------------------

def parse_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("expected true or false")


def parse_int(raw: Any) -> int:
    if isinstance(raw, bool):
        raise ValueError("expected a whole number")
    if isinstance(raw, int):
        return raw
    text = str(raw).strip().replace("_", "")
    if not re.fullmatch(r"[+-]?\d+", text):
        raise ValueError("expected a whole number")
    return int(text)


def parse_float(raw: Any) -> float:
    if isinstance(raw, bool):
        raise ValueError("expected a number")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ValueError("expected a number") from None
    if not math.isfinite(value):  # "inf" and "nan" parse, but no timeout or ratio means them
        raise ValueError("expected a finite number")
    return value


def parse_size(raw: Any) -> int:
    """Bytes: an integer, or a number with a unit (``10MiB``, ``500 KB``)."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(raw))
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError("expected a size such as 10485760 or 10MiB")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


def parse_list(raw: Any) -> tuple[str, ...]:
    items = raw if isinstance(raw, list | tuple) else str(raw).split(",")
    return tuple(str(item).strip().lower() for item in items if str(item).strip())


def parse_formats(raw: Any) -> tuple[str, ...]:
    """Format names; ``jpg`` (the extension people write) means ``jpeg``."""
    names = ("jpeg" if name == "jpg" else name for name in parse_list(raw))
    return tuple(dict.fromkeys(names))


def parse_str(raw: Any) -> str:
    if isinstance(raw, dict | list):
        raise ValueError("expected text")
    return str(raw).strip()


def parse_path(raw: Any) -> Path:
    text = parse_str(raw)
    if not text:
        raise ValueError("expected a path")
    return Path(text).expanduser()


def parse_output_size(raw: Any) -> tuple[int, int]:
    """``1200`` (square) or ``1200x900``."""
    if isinstance(raw, list | tuple) and len(raw) == 2:
        return (parse_int(raw[0]), parse_int(raw[1]))
    text = str(raw).strip().lower()
    match = re.fullmatch(r"(\d+)(?:\s*x\s*(\d+))?", text)
    if not match:
        raise ValueError("expected a size in pixels such as 1200 or 1200x900")
    width = int(match.group(1))
    return (width, int(match.group(2) or width))


def choice(*allowed: str) -> Callable[[Any], str]:
    def parse(raw: Any) -> str:
        text = parse_str(raw).lower()
        if text not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}")
        return text
    return parse


def _cron_value(token: str, field: _CronField) -> int:
    name, low, high, names = field
    if token.lower() in names:
        return low + names.index(token.lower())
    if not token.isdigit() or not low <= int(token) <= high:
        raise ValueError(f"{name} {token!r} is not in {low}..{high}"
                         + (f" nor a name such as {names[0]}" if names else ""))
    return int(token)


def _check_cron_field(text: str, field: _CronField) -> None:
    for item in text.split(","):
        base, slash, step = item.partition("/")
        if slash and not (step.isdigit() and int(step) >= 1):
            raise ValueError(f"{field[0]} step {step!r} must be a whole number of at least 1")
        if base == "*" or (base == "?" and field[0] == "weekday"):
            continue
        first, dash, last = base.partition("-")
        start = _cron_value(first, field)
        if dash and _cron_value(last, field) < start:
            raise ValueError(f"{field[0]} range {base!r} runs backwards")


def cron(raw: Any) -> str:
    """Five crontab fields, or six with seconds first; each value checked against its range
    (the scheduler would otherwise refuse it only when the daemon starts)."""
    text = " ".join(parse_str(raw).split())
    parts = text.split(" ")
    if len(parts) not in (5, 6):
        raise ValueError("expected a cron expression of five fields, such as '0 3 * * *' "
                         "(or six, seconds first: '*/10 * * * * *')")
    for part, field in zip(parts, _CRON_FIELDS[-len(parts):], strict=True):
        _check_cron_field(part, field)
    return text


# ---------------------------------------------------------------------------------------------
# Checks on the typed value.
# ---------------------------------------------------------------------------------------------

def at_least(low: float) -> Callable[[Any], str | None]:
    return lambda value: None if value >= low else f"must be at least {low}"


def between(low: float, high: float) -> Callable[[Any], str | None]:
    return lambda value: None if low <= value <= high else f"must be between {low} and {high}"


def formats_ok(value: tuple[str, ...]) -> str | None:
    unknown = set(value) - {"jpeg", "png", "webp"}
    if unknown:
        return f"unknown format(s) {', '.join(sorted(unknown))}; allowed: jpeg, png, webp"
    return None if value else "must name at least one format"


def output_size_ok(value: tuple[int, int]) -> str | None:
    return None if all(16 <= side <= 8000 for side in value) else "each side must be 16..8000 pixels"


def runtime_ok(value: str) -> str | None:
    if value == "openvino" and importlib.util.find_spec("openvino") is None:
        return ("OpenVINO is not installed: install thumbgen's openvino extra "
                "(pip install 'thumbgen[openvino]'; make setup and the image have it), or use "
                "auto or onnxruntime")
    return None


def port_ok(value: int) -> str | None:
    return None if 0 <= value <= 65535 else "must be a TCP port 0..65535"
