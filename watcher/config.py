"""Typed, frozen configuration: defaults in code, then a TOML file, then ``THUMBGEN_*`` variables.

Each option is defined once, in ``OPTIONS``; the TOML key (``max_file_size`` or ``MAX_FILE_SIZE``),
the environment name (``THUMBGEN_MAX_FILE_SIZE``) and the printed name all derive from it.
``load()`` validates every value and raises ``ConfigError`` naming the key and the value; it never
exits the process (the CLI turns ConfigError into exit code 2).
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from watcher import messages
from watcher import outputs as output_plan
from watcher.errors import ConfigError
from watcher.masking import mask_secret, mask_text, url_secrets
from watcher.outputs import Plan

ENV_PREFIX = "THUMBGEN_"
DEFAULT_CONFIG_FILE = Path("config/thumbgen.toml")

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


def _default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _default_model_path() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "thumbgen" / "u2netp.onnx"


# ---------------------------------------------------------------------------------------------
# Parsers: raw value (from TOML or a string from the environment) → typed value, or ValueError.
# ---------------------------------------------------------------------------------------------

def _parse_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("expected true or false")


def _parse_int(raw: Any) -> int:
    if isinstance(raw, bool):
        raise ValueError("expected a whole number")
    if isinstance(raw, int):
        return raw
    text = str(raw).strip().replace("_", "")
    if not re.fullmatch(r"[+-]?\d+", text):
        raise ValueError("expected a whole number")
    return int(text)


def _parse_float(raw: Any) -> float:
    if isinstance(raw, bool):
        raise ValueError("expected a number")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ValueError("expected a number") from None
    if not math.isfinite(value):  # "inf" and "nan" parse, but no timeout or ratio means them
        raise ValueError("expected a finite number")
    return value


def _parse_size(raw: Any) -> int:
    """Bytes: an integer, or a number with a unit (``10MiB``, ``500 KB``)."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(raw))
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError("expected a size such as 10485760 or 10MiB")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


def _parse_list(raw: Any) -> tuple[str, ...]:
    items = raw if isinstance(raw, list | tuple) else str(raw).split(",")
    return tuple(str(item).strip().lower() for item in items if str(item).strip())


def _parse_formats(raw: Any) -> tuple[str, ...]:
    """Format names; ``jpg`` (the extension people write) means ``jpeg``."""
    names = ("jpeg" if name == "jpg" else name for name in _parse_list(raw))
    return tuple(dict.fromkeys(names))


def _parse_str(raw: Any) -> str:
    if isinstance(raw, dict | list):
        raise ValueError("expected text")
    return str(raw).strip()


def _parse_path(raw: Any) -> Path:
    text = _parse_str(raw)
    if not text:
        raise ValueError("expected a path")
    return Path(text).expanduser()


def _parse_output_size(raw: Any) -> tuple[int, int]:
    """``1200`` (square) or ``1200x900``."""
    if isinstance(raw, list | tuple) and len(raw) == 2:
        return (_parse_int(raw[0]), _parse_int(raw[1]))
    text = str(raw).strip().lower()
    match = re.fullmatch(r"(\d+)(?:\s*x\s*(\d+))?", text)
    if not match:
        raise ValueError("expected a size in pixels such as 1200 or 1200x900")
    width = int(match.group(1))
    return (width, int(match.group(2) or width))


def _choice(*allowed: str) -> Callable[[Any], str]:
    def parse(raw: Any) -> str:
        text = _parse_str(raw).lower()
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


def _cron(raw: Any) -> str:
    """Five crontab fields, or six with seconds first; each value checked against its range
    (the scheduler would otherwise refuse it only when the daemon starts)."""
    text = " ".join(_parse_str(raw).split())
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

def _at_least(low: float) -> Callable[[Any], str | None]:
    return lambda value: None if value >= low else f"must be at least {low}"


def _between(low: float, high: float) -> Callable[[Any], str | None]:
    return lambda value: None if low <= value <= high else f"must be between {low} and {high}"


def _formats_ok(value: tuple[str, ...]) -> str | None:
    unknown = set(value) - {"jpeg", "png", "webp"}
    if unknown:
        return f"unknown format(s) {', '.join(sorted(unknown))}; allowed: jpeg, png, webp"
    return None if value else "must name at least one format"


def _output_size_ok(value: tuple[int, int]) -> str | None:
    return None if all(16 <= side <= 8000 for side in value) else "each side must be 16..8000 pixels"


def _runtime_ok(value: str) -> str | None:
    if value == "openvino" and importlib.util.find_spec("openvino") is None:
        return ("OpenVINO is not installed: install thumbgen's openvino extra "
                "(pip install 'thumbgen[openvino]'; make setup and the image have it), or use "
                "auto or onnxruntime")
    return None


def _port_ok(value: int) -> str | None:
    return None if 0 <= value <= 65535 else "must be a TCP port 0..65535"


@dataclass(frozen=True)
class Option:
    key: str
    parse: Callable[[Any], Any]
    default: Any
    help: str
    check: Callable[[Any], str | None] | None = None
    secret: bool = False

    @property
    def env_name(self) -> str:
        return ENV_PREFIX + self.key


def _opt(key: str, parse: Callable[[Any], Any], default: Any, help: str, **kw: Any) -> Option:
    return Option(key, parse, default, help, **kw)


# Every option, once. Defaults that depend on the machine are callables, resolved at load time.
OPTIONS: tuple[Option, ...] = (
    _opt("ENVIRONMENT", _choice("development", "production", "test"), "production",
         "Deployment flavour (development, production, test): shown in the logs and /health."),
    _opt("LOG_LEVEL", _choice("trace", "debug", "info", "success", "warning", "error", "critical"),
         "info", "Lowest level written to the console and the log file."),
    _opt("BASE_PATH", _parse_path, Path("."), "Folder the other relative paths start from."),
    _opt("UPLOAD_PATH", _parse_path, Path("produtos"), "The inbox the shops drop photos into."),
    _opt("BACKGROUND_PATH", _parse_path, Path("backgrounds"), "Background images."),
    _opt("OUTPUT_PATH", _parse_path, Path("thumbnails-prontas"), "Finished thumbnails."),
    _opt("LOG_PATH", _parse_path, Path("logs"), "Folder of app.log (JSON lines)."),
    _opt("BACKUP_PATH", _parse_path, Path("backups"), "Folder of backup archives."),
    _opt("MAX_FILE_SIZE", _parse_size, 10 * 1024**2, "Largest input accepted, in bytes (or 10MiB).",
         check=_at_least(1)),
    _opt("MAX_PIXELS", _parse_int, 40_000_000, "Largest input accepted, in pixels (width × height).",
         check=_at_least(1)),
    _opt("ALLOWED_FORMATS", _parse_formats, ("jpeg", "png", "webp"),
         "Input formats accepted, decided by content: jpeg, png, webp.", check=_formats_ok),
    _opt("REMOVAL_BACKEND", _choice("auto", "gradio", "local"), "auto",
         "auto: Gradio when GRADIO_API_URL is set, else the local model."),
    _opt("GRADIO_API_URL", _parse_str, "", "URL or Space id (owner/name) of the Gradio app."),
    _opt("GRADIO_API_NAME", _parse_str, "/png", "Endpoint of the Gradio app that returns the cut-out."),
    _opt("GRADIO_TOKEN", _parse_str, "", "Token for private or quota'd Spaces.", secret=True),
    _opt("GRADIO_TIMEOUT", _parse_float, 60.0, "Seconds one remote call may take.",
         check=_at_least(0.1)),
    _opt("GRADIO_RETRY_ATTEMPTS", _parse_int, 3, "Attempts per file for transient remote errors.",
         check=_at_least(1)),
    _opt("GRADIO_FALLBACK_ENABLED", _parse_bool, True,
         "Use the local model while the remote fails; when false, files wait for the remote."),
    _opt("MAX_CONCURRENT_REQUESTS", _parse_int, 4, "Remote calls in flight at most.",
         check=_between(1, 256)),
    _opt("REMOTE_MAX_SIDE", _parse_int, 2048,
         "Longest side, in pixels, of the photo sent to the remote app; its mask is brought back "
         "to full size against the photo's own edges. 256 to 65500 (the most a JPEG can hold).",
         check=_between(256, 65500)),
    _opt("WORKERS", _parse_int, 0, "CPU worker threads; 0 = one per core.", check=_between(0, 256)),
    _opt("CACHE_ENABLED", _parse_bool, True, "Cache cut-outs by content hash."),
    _opt("CACHE_TTL", _parse_int, 7 * 24 * 3600, "Seconds a cached cut-out stays valid.",
         check=_at_least(0)),
    _opt("HTTP_HOST", _parse_str, "127.0.0.1", "Address of the health and metrics server."),
    _opt("HTTP_PORT", _parse_int, 8080, "Port of the health and metrics server (0 = any free port).",
         check=_port_ok),
    _opt("LANGUAGE", messages.parse_language, messages.DEFAULT,
         "Language of the shop's page, of the first two lines of each .erro.txt and of what "
         "`thumbgen process` says about a photo: pt-BR or en."),
    _opt("UI_TOKEN", _parse_str, "", "Access code the shop's page asks before uploads and "
         "retries when HTTP_HOST is not a loopback address; without one the page is read-only "
         "there.", secret=True),
    _opt("METRICS_ENABLED", _parse_bool, True, "Serve /metrics."),
    _opt("HEALTH_CHECK_ENABLED", _parse_bool, True, "Serve /health, /livez and /readyz."),
    _opt("WATCH_MODE", _choice("auto", "native", "polling"), "auto",
         "native: inotify; polling: for network shares; auto: polling where the inbox is on a "
         "network share or FUSE (NFS, SMB, Ceph, 9p…), else native, polling if that fails."),
    _opt("POLL_INTERVAL", _parse_float, 2.0,
         "Seconds between polls of the inbox's folder mtimes, when polling.",
         check=_between(0.1, 3600)),
    _opt("RESCAN_INTERVAL", _parse_float, 60.0, "Seconds between full rescans of the inbox.",
         check=_at_least(0.5)),
    _opt("SETTLE_SECONDS", _parse_float, 2.0,
         "A file is taken once its size and mtime have not changed for this long.",
         check=_between(0, 3600)),
    _opt("SHUTDOWN_TIMEOUT", _parse_float, 30.0, "Seconds to finish in-flight files on SIGTERM.",
         check=_between(0, 3600)),
    _opt("CLAIM_LEASE_SECONDS", _parse_float, 300.0,
         "A daemon whose heartbeat is older than this is taken for gone, and its claimed files go "
         "back to the inbox; lengthen it on shares that can hang for longer.",
         check=_between(2, 86400)),
    _opt("SCHEDULER_ENABLED", _parse_bool, True, "Run backups and cleanup on a schedule."),
    _opt("BACKUP_SCHEDULE", _cron, "0 3 * * *", "Cron expression of the backup job."),
    _opt("BACKUP_RETENTION_DAYS", _parse_int, 30, "Days a backup archive is kept.",
         check=_at_least(1)),
    _opt("CLEANUP_SCHEDULE", _cron, "30 4 * * *", "Cron expression of the cleanup job."),
    _opt("PROCESSED_RETENTION_DAYS", _parse_int, 30, "Days an original stays in _processados/.",
         check=_at_least(1)),
    _opt("FAILED_RETENTION_DAYS", _parse_int, 90, "Days a rejected file stays in _falhas/.",
         check=_at_least(1)),
    _opt("OUTPUT_SIZE", _parse_output_size, (1200, 1200), "Thumbnail size: 1200 or 1200x900.",
         check=_output_size_ok),
    _opt("OUTPUT_FORMAT", _choice("jpeg", "png", "webp"), "jpeg", "Thumbnail format."),
    _opt("OUTPUT_QUALITY", _parse_int, 90, "JPEG/WebP quality 1..100.", check=_between(1, 100)),
    _opt("FILL_RATIO", _parse_float, 0.85, "Share of the canvas the product fills.",
         check=_between(0.05, 1.0)),
    _opt("OUTPUTS", _parse_list, ("default",),
         "Outputs made from each photo: presets (default, amazon, mercadolivre, cutout) or "
         "[outputs.NAME] tables of the TOML file; env: amazon,mercadolivre."),
    _opt("MODEL_PATH", _parse_path, _default_model_path, "Where the local U²-Net-p model lives."),
    _opt("LOCAL_RUNTIME", _choice("auto", "onnxruntime", "openvino"), "auto",
         "What runs the local model: onnxruntime (fp32); openvino (bf16 where the CPU has it "
         "natively, else fp32); auto: OpenVINO bf16 where the CPU has native bf16 (AMX or "
         "AVX-512 BF16) and its masks agree with onnxruntime's on a probe photo, else "
         "onnxruntime fp32.", check=_runtime_ok),
    _opt("WORKER_ID", _parse_str, _default_worker_id,
         "Name of this daemon's claim folder; must be unique among daemons on one share."),
    _opt("RATE_LIMIT_PER_MINUTE", _parse_int, 0, "Remote calls per minute at most (0 = no limit).",
         check=_at_least(0)),
)
OPTIONS_BY_KEY: dict[str, Option] = {opt.key: opt for opt in OPTIONS}


@dataclass(frozen=True)
class Settings:
    """The effective configuration. Built once by ``load()`` and passed down explicitly."""

    environment: Literal["development", "production", "test"]
    log_level: str
    base_path: Path
    upload_path: Path
    background_path: Path
    output_path: Path
    log_path: Path
    backup_path: Path
    max_file_size: int
    max_pixels: int
    allowed_formats: tuple[str, ...]
    removal_backend: Literal["auto", "gradio", "local"]
    gradio_api_url: str
    gradio_api_name: str
    gradio_token: str
    gradio_timeout: float
    gradio_retry_attempts: int
    gradio_fallback_enabled: bool
    max_concurrent_requests: int
    remote_max_side: int
    workers: int
    cache_enabled: bool
    cache_ttl: int
    http_host: str
    http_port: int
    language: str
    ui_token: str
    metrics_enabled: bool
    health_check_enabled: bool
    watch_mode: Literal["auto", "native", "polling"]
    poll_interval: float
    rescan_interval: float
    settle_seconds: float
    shutdown_timeout: float
    claim_lease_seconds: float
    scheduler_enabled: bool
    backup_schedule: str
    backup_retention_days: int
    cleanup_schedule: str
    processed_retention_days: int
    failed_retention_days: int
    output_size: tuple[int, int]
    output_format: Literal["jpeg", "png", "webp"]
    output_quality: int
    fill_ratio: float
    outputs: tuple[str, ...]
    model_path: Path
    local_runtime: Literal["auto", "onnxruntime", "openvino"]
    worker_id: str
    rate_limit_per_minute: int
    sources: dict[str, str] = field(default_factory=dict, compare=False, repr=False)
    # OUTPUTS, the [outputs.NAME] and [folders."NAME"] tables, resolved and checked
    plan: Plan = field(default_factory=lambda: Plan(()), compare=False, repr=False)

    # Folders the daemon owns inside the inbox (same filesystem, so renames are atomic).
    @property
    def state_path(self) -> Path:
        return self.upload_path / ".thumbgen"

    @property
    def processed_path(self) -> Path:
        return self.upload_path / "_processados"

    @property
    def failed_path(self) -> Path:
        return self.upload_path / "_falhas"

    @property
    def cpu_workers(self) -> int:
        return self.workers or (os.cpu_count() or 1)

    @property
    def removal_kind(self) -> Literal["gradio", "local"]:
        if self.removal_backend == "auto":
            return "gradio" if self.gradio_api_url else "local"
        return self.removal_backend

    def value(self, key: str) -> Any:
        return getattr(self, key.lower())

    def masked(self) -> dict[str, str]:
        """KEY → printable value, secrets masked. For ``thumbgen config`` and the start-up log."""
        out = {}
        for opt in OPTIONS:
            value = self.value(opt.key)
            out[opt.key] = mask_secret(value) if opt.secret else _show(value)
        return out

    def secret_values(self) -> list[str]:
        """Every secret value in force: the secret settings' and the secret parts of any URL in
        a setting. Logs, ``/health`` and error texts mask each wherever it appears."""
        found: list[str] = []
        for opt in OPTIONS:
            value = self.value(opt.key)
            if opt.secret and value:
                found.append(str(value))
            elif isinstance(value, str):
                found += url_secrets(value)
        return found

    def describe(self) -> list[str]:
        """One line per key: its value in force (secrets masked) and where it came from. What
        ``thumbgen config`` prints and the ``config`` backup records."""
        width = max(len(opt.key) for opt in OPTIONS)
        notes = {"REMOVAL_BACKEND": f", used: {self.removal_kind}",
                 "WORKER_ID": ", this process's own (each process has one)"}
        return [f"{key:<{width}}  {value}    # {self.sources.get(key, '')}"
                + (notes.get(key, "") if self.sources.get(key) == "default" else "")
                for key, value in self.masked().items()]


def _show(value: object) -> str:
    if isinstance(value, tuple) and value and all(isinstance(v, int) for v in value):
        return "x".join(str(v) for v in value)
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return mask_text(str(value))  # a URL's userinfo and token parameters


# TOML tables that are not groups of flat keys: [outputs.NAME] and [folders."NAME"]
_TABLES = ("outputs", "folders")


def _read_toml(path: Path) -> dict[str, Any]:
    """The file's flat keys (upper case), plus its special tables under their lower-case names.

    TOML cannot hold both ``outputs = [...]`` and ``[outputs.NAME]`` at the top level: with
    custom outputs, the list goes under any grouping section (``[thumbnail]`` ``outputs = …``).
    """
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError("config file", str(path), "file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config file", str(path), f"not valid TOML: {exc}") from None
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key in _TABLES and isinstance(value, dict):
            flat[key] = value
        elif isinstance(value, dict):  # [section] tables are allowed for grouping; keys stay flat
            flat.update({k.upper(): v for k, v in value.items()})
        else:
            flat[key.upper()] = value
    unknown = sorted(set(flat) - set(OPTIONS_BY_KEY) - set(_TABLES))
    if unknown:
        raise ConfigError(unknown[0], flat[unknown[0]], f"unknown key in {path}")
    return flat


# Kubernetes injects THUMBGEN_SERVICE_HOST, THUMBGEN_PORT_8080_TCP… for a Service named
# "thumbgen" unless enableServiceLinks is off: those are not misspelt settings. Only those exact
# shapes: a THUMBGEN_HTP_PORT is a misspelling.
_SERVICE_LINK = re.compile(r"^THUMBGEN_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT"
                           r"(_\d+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?)?)$")


def unknown_env(env: Mapping[str, str] | None = None) -> list[str]:
    """``THUMBGEN_*`` variables that are no setting: most likely a misspelt key, which would
    otherwise be ignored without a word (a misspelt TOML key stops the daemon instead)."""
    env = os.environ if env is None else env
    known = {opt.env_name for opt in OPTIONS} | {ENV_PREFIX + "CONFIG"}
    return sorted(name for name in env if name.startswith(ENV_PREFIX) and name not in known
                  and not _SERVICE_LINK.match(name))


def _config_file(explicit: Path | None, env: Mapping[str, str]) -> Path | None:
    if explicit is not None:
        return explicit
    if env.get(ENV_PREFIX + "CONFIG"):
        return Path(env[ENV_PREFIX + "CONFIG"])
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None


def load(config_file: Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Build the Settings: code defaults, then the TOML file, then ``THUMBGEN_*`` variables."""
    env = os.environ if env is None else env
    path = _config_file(config_file, env)
    file_values = _read_toml(path) if path else {}
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for opt in OPTIONS:
        if opt.env_name in env:
            raw, source = env[opt.env_name], f"env {opt.env_name}"
        elif opt.key in file_values:
            raw, source = file_values[opt.key], f"file {path}"
        else:
            raw, source = (opt.default() if callable(opt.default) else opt.default), "default"
        shown = (mask_secret(raw) if opt.secret
                 else mask_text(raw) if isinstance(raw, str) else raw)
        try:
            value = opt.parse(raw)
        except ValueError as exc:
            raise ConfigError(opt.key, shown, f"{exc} (from {source})") from None
        problem = opt.check(value) if opt.check else None
        if problem:
            raise ConfigError(opt.key, shown, f"{problem} (from {source})")
        values[opt.key.lower()] = value
        sources[opt.key] = source
    _resolve_paths(values)
    _check_consistency(values)
    try:
        plan = output_plan.build(
            {"size": values["output_size"], "format": values["output_format"],
             "quality": values["output_quality"], "fill": values["fill_ratio"]},
            values["outputs"], file_values.get("outputs", {}), file_values.get("folders", {}))
    except ConfigError as exc:
        if exc.key != "OUTPUTS":  # the tables' keys name where they are: [outputs.NAME].fill
            raise
        raise ConfigError(exc.key, exc.value,
                          f"{exc.reason} (from {sources['OUTPUTS']})") from None
    return Settings(**values, sources=sources, plan=plan)


def _resolve_paths(values: dict[str, Any]) -> None:
    base = values["base_path"].resolve()
    values["base_path"] = base
    for key in ("upload_path", "background_path", "output_path", "log_path", "backup_path"):
        path = values[key]
        values[key] = (path if path.is_absolute() else base / path).resolve()
    values["model_path"] = values["model_path"].resolve()


def _check_consistency(values: dict[str, Any]) -> None:
    if values["removal_backend"] == "gradio" and not values["gradio_api_url"]:
        raise ConfigError("GRADIO_API_URL", "", "must be set when REMOVAL_BACKEND is gradio")
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,100}", values["worker_id"]):
        raise ConfigError("WORKER_ID", values["worker_id"],
                          "may use only letters, digits, '.', '_' and '-' (1..100 characters)")
    upload, output = values["upload_path"], values["output_path"]
    if output == upload or output.is_relative_to(upload) or upload.is_relative_to(output):
        raise ConfigError("OUTPUT_PATH", str(output), "must not be inside UPLOAD_PATH or contain it")


def option_names() -> list[str]:
    return [opt.key for opt in OPTIONS]


def settings_fields() -> list[str]:
    return [f.name for f in fields(Settings) if f.name not in ("sources", "plan")]
