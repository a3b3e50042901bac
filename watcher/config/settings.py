"""``Settings``: the effective configuration, typed and frozen, built once by ``load()``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from watcher.config.options import OPTIONS
from watcher.masking import mask_secret, mask_text, url_secrets
from watcher.outputs import Plan


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
