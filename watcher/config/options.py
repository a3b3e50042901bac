"""Every option once: its key, parser, default, help, check and secret flag. The TOML key
(``max_file_size`` or ``MAX_FILE_SIZE``), the environment name (``THUMBGEN_MAX_FILE_SIZE``) and the
printed name all derive from it."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watcher import messages
from watcher.config.values import (
    at_least,
    between,
    choice,
    cron,
    formats_ok,
    output_size_ok,
    parse_bool,
    parse_float,
    parse_formats,
    parse_int,
    parse_list,
    parse_output_size,
    parse_path,
    parse_size,
    parse_str,
    port_ok,
    runtime_ok,
)

ENV_PREFIX = "THUMBGEN_"


def _default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _default_model_path() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "thumbgen" / "u2netp.onnx"


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
    _opt("ENVIRONMENT", choice("development", "production", "test"), "production",
         "Deployment flavour (development, production, test): shown in the logs and /health."),
    _opt("LOG_LEVEL", choice("trace", "debug", "info", "success", "warning", "error", "critical"),
         "info", "Lowest level written to the console and the log file."),
    _opt("BASE_PATH", parse_path, Path("."), "Folder the other relative paths start from."),
    _opt("UPLOAD_PATH", parse_path, Path("produtos"), "The inbox the shops drop photos into."),
    _opt("BACKGROUND_PATH", parse_path, Path("backgrounds"), "Background images."),
    _opt("OUTPUT_PATH", parse_path, Path("thumbnails-prontas"), "Finished thumbnails."),
    _opt("LOG_PATH", parse_path, Path("logs"), "Folder of app.log (JSON lines)."),
    _opt("BACKUP_PATH", parse_path, Path("backups"), "Folder of backup archives."),
    _opt("MAX_FILE_SIZE", parse_size, 10 * 1024**2, "Largest input accepted, in bytes (or 10MiB).",
         check=at_least(1)),
    _opt("MAX_PIXELS", parse_int, 40_000_000, "Largest input accepted, in pixels (width × height).",
         check=at_least(1)),
    _opt("ALLOWED_FORMATS", parse_formats, ("jpeg", "png", "webp"),
         "Input formats accepted, decided by content: jpeg, png, webp.", check=formats_ok),
    _opt("REMOVAL_BACKEND", choice("auto", "gradio", "local"), "auto",
         "auto: Gradio when GRADIO_API_URL is set, else the local model."),
    _opt("GRADIO_API_URL", parse_str, "", "URL or Space id (owner/name) of the Gradio app."),
    _opt("GRADIO_API_NAME", parse_str, "/png", "Endpoint of the Gradio app that returns the cut-out."),
    _opt("GRADIO_TOKEN", parse_str, "", "Token for private or quota'd Spaces.", secret=True),
    _opt("GRADIO_TIMEOUT", parse_float, 60.0, "Seconds one remote call may take.",
         check=at_least(0.1)),
    _opt("GRADIO_RETRY_ATTEMPTS", parse_int, 3, "Attempts per file for transient remote errors.",
         check=at_least(1)),
    _opt("GRADIO_FALLBACK_ENABLED", parse_bool, True,
         "Use the local model while the remote fails; when false, files wait for the remote."),
    _opt("MAX_CONCURRENT_REQUESTS", parse_int, 4, "Remote calls in flight at most.",
         check=between(1, 256)),
    _opt("REMOTE_MAX_SIDE", parse_int, 2048,
         "Longest side, in pixels, of the photo sent to the remote app; its mask is brought back "
         "to full size against the photo's own edges. 256 to 65500 (the most a JPEG can hold).",
         check=between(256, 65500)),
    _opt("WORKERS", parse_int, 0, "CPU worker threads; 0 = one per core.", check=between(0, 256)),
    _opt("CACHE_ENABLED", parse_bool, True, "Cache cut-outs by content hash."),
    _opt("CACHE_TTL", parse_int, 7 * 24 * 3600, "Seconds a cached cut-out stays valid.",
         check=at_least(0)),
    _opt("HTTP_HOST", parse_str, "127.0.0.1", "Address of the health and metrics server."),
    _opt("HTTP_PORT", parse_int, 8080, "Port of the health and metrics server (0 = any free port).",
         check=port_ok),
    _opt("LANGUAGE", messages.parse_language, messages.DEFAULT,
         "Language of the shop's page, of the first two lines of each .erro.txt and of what "
         "`thumbgen process` says about a photo: pt-BR or en."),
    _opt("UI_TOKEN", parse_str, "", "Access code the shop's page asks before uploads and "
         "retries when HTTP_HOST is not a loopback address; without one the page is read-only "
         "there.", secret=True),
    _opt("METRICS_ENABLED", parse_bool, True, "Serve /metrics."),
    _opt("HEALTH_CHECK_ENABLED", parse_bool, True, "Serve /health, /livez and /readyz."),
    _opt("WATCH_MODE", choice("auto", "native", "polling"), "auto",
         "native: inotify; polling: for network shares; auto: polling where the inbox is on a "
         "network share or FUSE (NFS, SMB, Ceph, 9p…), else native, polling if that fails."),
    _opt("POLL_INTERVAL", parse_float, 2.0,
         "Seconds between polls of the inbox's folder mtimes, when polling.",
         check=between(0.1, 3600)),
    _opt("RESCAN_INTERVAL", parse_float, 60.0, "Seconds between full rescans of the inbox.",
         check=at_least(0.5)),
    _opt("SETTLE_SECONDS", parse_float, 2.0,
         "A file is taken once its size and mtime have not changed for this long.",
         check=between(0, 3600)),
    _opt("SHUTDOWN_TIMEOUT", parse_float, 30.0, "Seconds to finish in-flight files on SIGTERM.",
         check=between(0, 3600)),
    _opt("CLAIM_LEASE_SECONDS", parse_float, 300.0,
         "A daemon whose heartbeat is older than this is taken for gone, and its claimed files go "
         "back to the inbox; lengthen it on shares that can hang for longer.",
         check=between(2, 86400)),
    _opt("SCHEDULER_ENABLED", parse_bool, True, "Run backups and cleanup on a schedule."),
    _opt("BACKUP_SCHEDULE", cron, "0 3 * * *", "Cron expression of the backup job."),
    _opt("BACKUP_RETENTION_DAYS", parse_int, 30, "Days a backup archive is kept.",
         check=at_least(1)),
    _opt("CLEANUP_SCHEDULE", cron, "30 4 * * *", "Cron expression of the cleanup job."),
    _opt("PROCESSED_RETENTION_DAYS", parse_int, 30, "Days an original stays in _processados/.",
         check=at_least(1)),
    _opt("FAILED_RETENTION_DAYS", parse_int, 90, "Days a rejected file stays in _falhas/.",
         check=at_least(1)),
    _opt("OUTPUT_SIZE", parse_output_size, (1200, 1200), "Thumbnail size: 1200 or 1200x900.",
         check=output_size_ok),
    _opt("OUTPUT_FORMAT", choice("jpeg", "png", "webp"), "jpeg", "Thumbnail format."),
    _opt("OUTPUT_QUALITY", parse_int, 90, "JPEG/WebP quality 1..100.", check=between(1, 100)),
    _opt("FILL_RATIO", parse_float, 0.85, "Share of the canvas the product fills.",
         check=between(0.05, 1.0)),
    _opt("OUTPUTS", parse_list, ("default",),
         "Outputs made from each photo: presets (default, amazon, mercadolivre, cutout) or "
         "[outputs.NAME] tables of the TOML file; env: amazon,mercadolivre."),
    _opt("MODEL_PATH", parse_path, _default_model_path, "Where the local U²-Net-p model lives."),
    _opt("LOCAL_RUNTIME", choice("auto", "onnxruntime", "openvino"), "auto",
         "What runs the local model: onnxruntime (fp32); openvino (bf16 where the CPU has it "
         "natively, else fp32); auto: OpenVINO bf16 where the CPU has native bf16 (AMX or "
         "AVX-512 BF16) and its masks agree with onnxruntime's on a probe photo, else "
         "onnxruntime fp32.", check=runtime_ok),
    _opt("WORKER_ID", parse_str, _default_worker_id,
         "Name of this daemon's claim folder; must be unique among daemons on one share."),
    _opt("RATE_LIMIT_PER_MINUTE", parse_int, 0, "Remote calls per minute at most (0 = no limit).",
         check=at_least(0)),
)
OPTIONS_BY_KEY: dict[str, Option] = {opt.key: opt for opt in OPTIONS}
