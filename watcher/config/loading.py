"""``load()``: code defaults, then the TOML file, then ``THUMBGEN_*`` variables, each value parsed
and checked; a bad one raises ``ConfigError`` naming the key, the value and where it was set."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from watcher import outputs as output_plan
from watcher.config.options import ENV_PREFIX, OPTIONS, OPTIONS_BY_KEY
from watcher.config.settings import Settings
from watcher.errors import ConfigError
from watcher.masking import mask_secret, mask_text

DEFAULT_CONFIG_FILE = Path("config/thumbgen.toml")


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
