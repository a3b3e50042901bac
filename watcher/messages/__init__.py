"""What the shop reads, in its language: one catalogue per language, ``<language>.toml`` here.

``LANGUAGE`` (``pt-BR`` by default, or ``en``) picks the catalogue for the first two lines of every
``.erro.txt``, what ``thumbgen process`` says about a photo, and the status page. Logs, metrics and
the technical lines of a note (``file:``, ``kind:``…) stay in English for whoever investigates.

A message is ``section.name`` (``reason.empty``, ``advice.too_large``, ``page.retry``) with
``{field}`` placeholders. Floats are written with one decimal in the language's decimal mark
(whole ones without). Both catalogues
hold the same keys (``missing_keys()``; a test fails otherwise), so a lookup never falls back
silently; an unknown key is a bug and raises ``KeyError``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

LANGUAGES = ("pt-BR", "en")
DEFAULT = "pt-BR"
ENGLISH = "en"
_DECIMAL_MARK = {"pt-BR": ",", "en": "."}
_ALIASES = {"pt": "pt-BR", "pt-br": "pt-BR", "en": "en", "en-us": "en", "en-gb": "en"}


def parse_language(raw: Any) -> str:
    """``pt-BR``, ``pt_br``, ``pt`` → ``pt-BR``; ``en``, ``en-US`` → ``en``; else ValueError."""
    text = str(raw).strip().lower().replace("_", "-")
    if text not in _ALIASES:
        raise ValueError(f"expected one of {', '.join(LANGUAGES)}")
    return _ALIASES[text]


@cache
def catalogue(language: str) -> Mapping[str, str]:
    """Every message of ``language``, by ``section.name``."""
    if language not in LANGUAGES:
        raise ValueError(f"no catalogue for {language!r}")
    raw = (resources.files(__name__) / f"{language}.toml").read_text(encoding="utf-8")
    return {f"{section}.{name}": text for section, table in tomllib.loads(raw).items()
            for name, text in table.items()}


def missing_keys() -> dict[str, list[str]]:
    """Language → keys another catalogue has and this one lacks (empty lists when complete)."""
    every = set().union(*(catalogue(lang) for lang in LANGUAGES))
    return {lang: sorted(every - set(catalogue(lang))) for lang in LANGUAGES}


def text(language: str, key: str, **fields: Any) -> str:
    """The message ``key`` in ``language`` with its fields filled in."""
    shown = {name: (_number(value, _DECIMAL_MARK[language]) if isinstance(value, float) else value)
             for name, value in fields.items()}
    return catalogue(language)[key].format(**shown)


def _number(value: float, mark: str) -> str:
    """``10`` for 10.0, ``12,3`` (pt-BR) or ``12.3`` (en) for 12.34."""
    return str(int(value)) if value.is_integer() else f"{value:.1f}".replace(".", mark)


def shop_lines(language: str, kind: str, reason_key: str | None, fields: Mapping[str, Any],
               fallback: str) -> tuple[str, str]:
    """The two lines a shop reads about a rejected photo: what is wrong, what to do.

    ``reason_key`` names the sentence under ``reason.``; without one (a reason raised by code
    that has no key) the English ``fallback`` stands. The advice is chosen by ``kind``."""
    reason = text(language, f"reason.{reason_key}", **fields) if reason_key else fallback
    advice_key = f"advice.{kind}"
    advice = text(language, advice_key) if advice_key in catalogue(language) else ""
    return reason, advice


__all__ = ["LANGUAGES", "DEFAULT", "ENGLISH", "parse_language", "catalogue", "missing_keys",
           "text", "shop_lines"]
