"""The shop's message catalogues: complete in every language, every reason and advice covered."""

from __future__ import annotations

import re
import string

import pytest

from watcher import messages
from watcher.errors import ADVICE, REJECT_KINDS, UNEXPECTED, RejectedImage


def test_no_key_is_missing_from_any_language() -> None:
    assert messages.missing_keys() == {lang: [] for lang in messages.LANGUAGES}


@pytest.mark.parametrize("language", messages.LANGUAGES)
def test_every_message_has_the_same_fields_in_every_language(language: str) -> None:
    def fields(text: str) -> set[str]:
        return {name for _, name, _, _ in string.Formatter().parse(text) if name}

    english = messages.catalogue(messages.ENGLISH)
    for key, text in messages.catalogue(language).items():
        assert fields(text) == fields(english[key]), key


def test_every_reason_word_has_its_advice_in_every_language() -> None:
    for language in messages.LANGUAGES:
        for kind in (*REJECT_KINDS, UNEXPECTED):
            assert messages.text(language, f"advice.{kind}").strip(), (language, kind)
    assert ADVICE["incomplete"] == ("Copy the photo into produtos/ again and wait until the copy "
                                    "has finished.")


def test_every_reason_raised_in_the_code_has_a_key() -> None:
    """Every ``RejectedImage.because("key", …)`` of the package names a sentence that exists."""
    from pathlib import Path

    root = Path(messages.__file__).resolve().parent.parent
    used = {m for path in root.rglob("*.py")
            for m in re.findall(r'because\(\s*"([a-z_]+)"', path.read_text())}
    used |= {"incomplete", "damaged"}  # validate passes the kind as the key
    assert used >= {"empty", "symlink", "no_product", "refused_by_remote"}
    for key in used:
        assert f"reason.{key}" in messages.catalogue(messages.DEFAULT), key


def test_a_rejection_reads_in_the_shops_language_with_its_numbers() -> None:
    exc = RejectedImage.because("too_large_size", "x", kind="too_large", size=12.25, limit=10.0)

    assert exc.reason == "The file is too large (12.2 MB); the limit is 10 MB."  # the log's
    assert exc.shop_lines("pt-BR") == (
        "O arquivo é grande demais (12,2 MB); o limite é 10 MB.",
        "Salve uma cópia menor da foto (com menos qualidade ou tamanho) e coloque essa cópia em "
        "produtos/.")
    assert exc.shop_lines("en")[1] == ADVICE["too_large"]


def test_a_reason_without_a_key_keeps_its_english_sentence() -> None:
    exc = RejectedImage("Something only code knows.", kind="damaged")
    assert exc.shop_lines("pt-BR") == ("Something only code knows.",
                                       messages.text("pt-BR", "advice.damaged"))


@pytest.mark.parametrize(("raw", "language"), [("pt-BR", "pt-BR"), ("pt_br", "pt-BR"),
                                               ("PT", "pt-BR"), ("en", "en"), ("en-US", "en")])
def test_language_names_people_write(raw: str, language: str) -> None:
    assert messages.parse_language(raw) == language


def test_an_unknown_language_is_refused() -> None:
    with pytest.raises(ValueError, match="pt-BR, en"):
        messages.parse_language("fr")
