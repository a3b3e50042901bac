"""What each photo becomes: named outputs built from presets, and per-shop folder settings.

Presets are data (``PRESETS``): a table of what each marketplace accepts. An output is a preset
plus whatever a ``[outputs.NAME]`` table of the TOML file changes; ``OUTPUTS`` lists the outputs
made from every photo, and a ``[folders."loja-a"]`` table changes ``outputs``, ``background`` and
``fill`` for the photos under ``produtos/loja-a/``. Everything is checked at load: a bad
combination is a ``ConfigError`` naming the key, so the daemon never starts with it.

Marketplace presets (``amazon``, ``mercadolivre``) and ``cutout`` are locked: a shop folder's
``background`` and ``fill`` apply to outputs made from ``default`` only, and they never get a
shadow. A custom output made from a marketplace preset may still change what the marketplace
allows (a size, a quality), not its white background.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath
from typing import Any

from watcher.errors import ConfigError

FORMATS = ("jpeg", "png", "webp", "avif")
SUFFIXES = {"jpeg": ".jpg", "png": ".png", "webp": ".webp", "avif": ".avif"}
TRANSPARENT_FORMATS = ("png", "webp", "avif")
SHADOWS = ("none", "contact")
MARKETPLACES = ("amazon", "mercadolivre")
_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
MIB = 1024**2


@dataclass(frozen=True)
class OutputSpec:
    """One output: the canvas, its background, the product's share of it, the file format.

    ``size`` None: the upright input's own size, nothing trimmed or moved (``fill`` None).
    ``background``: ``folder`` (from backgrounds/), ``white``, ``#rrggbb``, ``transparent``, or
    the name of an image in backgrounds/ (a shop folder's own).
    """

    name: str
    preset: str
    size: tuple[int, int] | None
    format: str
    quality: int
    fill: float | None
    background: str
    shadow: str = "none"
    max_bytes: int | None = None
    # the marketplace suppresses a main image whose background is not exactly white
    pure_white: bool = False

    @property
    def suffix(self) -> str:
        return SUFFIXES[self.format]

    @property
    def locked(self) -> bool:
        return self.preset in MARKETPLACES or self.preset == "cutout"


# The built-in presets. ``default`` takes OUTPUT_SIZE, OUTPUT_FORMAT, OUTPUT_QUALITY and FILL_RATIO.
PRESETS: dict[str, dict[str, Any]] = {
    "default": {"background": "folder"},
    # Amazon: pure white, the product at least 85 % of the frame, zoom needs ≥ 1000 px
    "amazon": {"size": (2000, 2000), "format": "jpeg", "quality": 90, "fill": 0.88,
               "background": "white", "pure_white": True},
    # Mercado Livre: white, the product ~95 % of the space, 1200×1200 recommended, ≤ 10 MB
    "mercadolivre": {"size": (1200, 1200), "format": "jpeg", "quality": 90, "fill": 0.95,
                     "background": "white", "pure_white": True, "max_bytes": 10 * MIB},
    # a drop-in for `rembg p`: the photo at its own size, alpha is the final mask
    "cutout": {"size": None, "format": "png", "quality": 90, "fill": None,
               "background": "transparent"},
}
_OUTPUT_KEYS = ("preset", "size", "format", "quality", "fill", "background", "shadow")
_FOLDER_KEYS = ("outputs", "background", "fill")


@dataclass(frozen=True)
class FolderSettings:
    """A shop folder's own ``outputs``, ``background`` and ``fill`` (None: the global one)."""

    outputs: tuple[str, ...] | None = None
    background: str | None = None
    fill: float | None = None


@dataclass(frozen=True)
class Plan:
    """Every output made from every photo, and the shop folders' own settings."""

    outputs: tuple[OutputSpec, ...]
    specs: Mapping[str, OutputSpec] = field(default_factory=dict)
    folders: Mapping[str, FolderSettings] = field(default_factory=dict)

    @property
    def by_name(self) -> bool:
        """Whether every output goes under its own name (``<output>/<rel>``): as soon as the
        configuration makes more than one output anywhere, top level or shop folder. One layout
        for all, so a shop folder named like an output (``amazon/``) never lands among, or
        over, that output's files, and a shop's files are never split between two layouts."""
        names = {spec.name for spec in self.outputs}
        for shop in self.folders.values():
            if shop.outputs is not None:
                names.update(shop.outputs)
        return len(names) > 1

    def for_rel(self, rel: PurePosixPath) -> tuple[OutputSpec, ...]:
        """The outputs of the input at ``rel`` (its first path component is its shop folder)."""
        shop = self.folders.get(rel.parts[0]) if len(rel.parts) > 1 else None
        if shop is None:
            return self.outputs
        names = shop.outputs if shop.outputs is not None else tuple(o.name for o in self.outputs)
        specs = [self.specs[name] for name in names]
        return tuple(_for_shop(spec, shop) for spec in specs)

    def describe(self) -> list[str]:
        """Lines for ``thumbgen config``: each output, then each shop folder's effective ones."""
        lines = [f"output {spec.name}: {describe(spec)}" for spec in self.outputs]
        for shop in sorted(self.folders):
            rel = PurePosixPath(shop, "x.jpg")
            lines += [f'folder "{shop}" → output {spec.name}: {describe(spec)}'
                      for spec in self.for_rel(rel)]
        return lines


def describe(spec: OutputSpec) -> str:
    size = "the input's own size" if spec.size is None else f"{spec.size[0]}×{spec.size[1]}"
    fill = "" if spec.fill is None else f", product fills {spec.fill:.0%}"
    quality = f" q{spec.quality}" if spec.format in ("jpeg", "webp", "avif") else ""
    extra = ", shadow" if spec.shadow != "none" else ""
    return (f"{size} {spec.format.upper()}{quality}, background {spec.background}{fill}{extra}"
            f" (preset {spec.preset})")


def output_rel(rel: PurePosixPath, spec: OutputSpec, several: bool) -> PurePosixPath:
    """Where the output of ``rel`` goes, relative to OUTPUT_PATH: the input's folders and stem,
    under the output's name when the configuration makes several outputs (``Plan.by_name``)."""
    mirrored = rel.with_name(rel.stem + spec.suffix)
    return PurePosixPath(spec.name, mirrored) if several else mirrored


def _for_shop(spec: OutputSpec, shop: FolderSettings) -> OutputSpec:
    if spec.preset != "default":
        return spec
    return replace(spec, background=shop.background or spec.background,
                   fill=shop.fill if shop.fill is not None else spec.fill)


# -- building and checking -----------------------------------------------------------------------

def build(default: Mapping[str, Any], outputs: tuple[str, ...],
          tables: Mapping[str, Any], folders: Mapping[str, Any]) -> Plan:
    """The plan from the settings: ``default`` holds size/format/quality/fill of the default
    preset; ``tables`` the ``[outputs.NAME]`` tables; ``folders`` the ``[folders.NAME]`` ones."""
    specs = {name: _preset_spec(name, name, default) for name in PRESETS}
    for name, table in tables.items():
        specs[name] = _custom(name, table, default)
    for name in outputs:
        if name not in specs:
            raise ConfigError("OUTPUTS", ",".join(outputs), f"unknown output {name!r}: use a "
                              f"preset ({', '.join(PRESETS)}) or define [outputs.{name}]")
    if not outputs:
        raise ConfigError("OUTPUTS", "", "name at least one output")
    if len(set(outputs)) != len(outputs):
        raise ConfigError("OUTPUTS", ",".join(outputs), "an output is listed twice")
    shops = {name: _folder(name, table, specs) for name, table in folders.items()}
    return Plan(tuple(specs[name] for name in outputs), specs, shops)


def _preset_spec(name: str, preset: str, default: Mapping[str, Any]) -> OutputSpec:
    values = {"size": default["size"], "format": default["format"],
              "quality": default["quality"], "fill": default["fill"], "background": "folder"}
    values.update(PRESETS[preset])
    return OutputSpec(name=name, preset=preset, **values)


def _custom(name: str, table: Any, default: Mapping[str, Any]) -> OutputSpec:
    key = f"outputs.{name}"
    if not _NAME.match(name) or name in PRESETS:
        raise ConfigError(key, name, "an output name is lower-case letters, digits, '.', '_', "
                          "'-' and must not be a preset's name")
    if not isinstance(table, Mapping):
        raise ConfigError(key, table, "must be a table: [outputs.NAME]")
    unknown = sorted(set(table) - set(_OUTPUT_KEYS))
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}", table[unknown[0]],
                          f"unknown key (known: {', '.join(_OUTPUT_KEYS)})")
    preset = table.get("preset", "default")
    if preset not in PRESETS:
        raise ConfigError(f"{key}.preset", preset, f"unknown preset (one of {', '.join(PRESETS)})")
    spec = replace(_preset_spec(name, preset, default), **{
        k: _parse(f"{key}.{k}", k, v) for k, v in table.items() if k != "preset"})
    _check(key, spec, set(table))
    return spec


def _parse(key: str, what: str, value: Any) -> Any:
    try:
        if what == "size":
            return parse_size(value)
        if what == "quality":
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100:
                raise ValueError("must be a whole number 1..100")
            return value
        if what == "fill":
            return parse_fill(value)
        if what == "format":
            if str(value).lower() not in FORMATS:
                raise ValueError(f"one of {', '.join(FORMATS)}")
            return str(value).lower()
        if what == "shadow":
            if value not in SHADOWS:
                raise ValueError(f"one of {', '.join(SHADOWS)}")
            return value
        return parse_background(value)
    except ValueError as exc:
        raise ConfigError(key, value, str(exc)) from None


def _check(key: str, spec: OutputSpec, given: set[str]) -> None:
    if spec.background == "transparent" and spec.format not in TRANSPARENT_FORMATS:
        raise ConfigError(f"{key}.background", "transparent",
                          f"{spec.format.upper()} has no transparency: use png, webp or avif")
    if spec.preset in MARKETPLACES and "background" in given and spec.background != "white":
        raise ConfigError(f"{key}.background", spec.background,
                          f"{spec.preset} needs an exactly white background")
    if spec.shadow != "none" and spec.preset in MARKETPLACES:
        raise ConfigError(f"{key}.shadow", spec.shadow,
                          f"{spec.preset} does not accept shadows on the main image")
    if spec.size is None and spec.fill is not None:
        raise ConfigError(f"{key}.fill", spec.fill, "a cut-out at the input's own size is "
                          "neither trimmed nor scaled: give it a size too")


def _folder(name: str, table: Any, specs: Mapping[str, OutputSpec]) -> FolderSettings:
    key = f"folders.{name}"
    if not isinstance(table, Mapping):
        raise ConfigError(key, table, 'must be a table: [folders."NAME"]')
    if "/" in name or name in ("", ".", "..") or name.startswith((".", "_")):
        raise ConfigError(key, name, "a shop folder is one folder name directly in the inbox")
    unknown = sorted(set(table) - set(_FOLDER_KEYS))
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}", table[unknown[0]],
                          f"unknown key (known: {', '.join(_FOLDER_KEYS)})")
    outputs = None
    if "outputs" in table:
        outputs = parse_names(table["outputs"])
        missing = [o for o in outputs if o not in specs]
        if missing or not outputs:
            raise ConfigError(f"{key}.outputs", table["outputs"],
                              f"unknown output {missing[0]!r}" if missing else "name one")
    background = fill = None
    if "background" in table:
        background = _parse(f"{key}.background", "background", table["background"])
        if background == "transparent":
            raise ConfigError(f"{key}.background", background, "a shop folder's background "
                              "is a colour or an image; transparency is an output's choice")
    if "fill" in table:
        fill = _parse(f"{key}.fill", "fill", table["fill"])
    return FolderSettings(outputs, background, fill)


def parse_size(value: Any) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        w = h = value
    elif isinstance(value, list | tuple) and len(value) == 2:
        w, h = value
    else:
        text = str(value).lower().replace("×", "x")
        w, _, h = text.partition("x")
        try:
            w, h = int(w), int(h or w)
        except ValueError:
            raise ValueError("a size is 1200, 1200x900 or [1200, 900]") from None
    if not all(isinstance(v, int) and 16 <= v <= 10_000 for v in (w, h)):
        raise ValueError("each side must be 16..10000 pixels")
    return (w, h)


def parse_fill(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise ValueError("must be a share of the canvas in (0, 1], such as 0.85")
    return float(value)


def parse_background(value: Any) -> str:
    text = str(value)
    if text in ("folder", "white", "transparent") or _HEX.match(text):
        return text.lower()
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,99}\.(jpe?g|png|webp)", text, re.I):
        return text  # an image in backgrounds/
    raise ValueError("folder, white, transparent, #rrggbb, or an image file in backgrounds/")


def parse_names(value: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ConfigError("OUTPUTS", value, "a list of output names")
    return tuple(str(item).strip() for item in items if str(item).strip())
