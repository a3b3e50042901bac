"""Typed, frozen configuration: defaults in code, then a TOML file, then ``THUMBGEN_*`` variables.

Each option is defined once, in ``OPTIONS``; the TOML key (``max_file_size`` or ``MAX_FILE_SIZE``),
the environment name (``THUMBGEN_MAX_FILE_SIZE``) and the printed name all derive from it.
``load()`` validates every value and raises ``ConfigError`` naming the key and the value; it never
exits the process (the CLI turns ConfigError into exit code 2).

The package: ``values.py`` (parsers and checks) → ``options.py`` (the table) → ``settings.py``
(``Settings``) → ``loading.py`` (``load``). Import from here.
"""

from __future__ import annotations

from watcher.config.loading import (
    DEFAULT_CONFIG_FILE,
    load,
    option_names,
    settings_fields,
    unknown_env,
)
from watcher.config.options import ENV_PREFIX, OPTIONS, OPTIONS_BY_KEY, Option
from watcher.config.settings import Settings
from watcher.masking import mask_secret

__all__ = ["DEFAULT_CONFIG_FILE", "ENV_PREFIX", "OPTIONS", "OPTIONS_BY_KEY", "Option", "Settings",
           "load", "mask_secret", "option_names", "settings_fields", "unknown_env"]
