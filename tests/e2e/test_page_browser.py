"""The shop's page in a real browser (Debian's chromium, Selenium), on the real daemon.

One browser session for the module; the JavaScript-off checks have their own module.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser import chromium
from tests.e2e.conftest import Daemon, daemon_env, wait_for
from tests.e2e.test_ops import base_url

pytestmark = pytest.mark.e2e
DATA = Path(__file__).resolve().parent.parent / "data" / "products"


def start_shop(base: Path, photos: tuple[str, ...] = ("books.jpg", "mugs.jpg"),
               junk: bool = True, **settings: str) -> Daemon:
    """A daemon whose page shows ``photos`` made into thumbnails and, with ``junk``, one file
    that is no photo (each costs start-up time: the model, the grace before a rejection)."""
    for folder in ("produtos/loja-a", "backgrounds", "thumbnails-prontas"):
        (base / folder).mkdir(parents=True, exist_ok=True)
    for name in photos:
        shutil.copyfile(DATA / name, base / "produtos/loja-a" / name)
    if junk:  # rejected only after the grace for unfinished uploads (20 settle periods)
        (base / "produtos" / "lista.jpg").write_bytes(b"uma lista de compras, nada de foto\n")
    d = Daemon(base, daemon_env(base), "shop")
    d.start(OUTPUT_SIZE=400, **settings)
    d.wait_started()
    d.wait_idle(len(photos) + junk)
    return d


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[Daemon]:
    d = start_shop(tmp_path_factory.mktemp("browser"))
    yield d
    d.stop()


@pytest.fixture(scope="module")
def browser(shop: Daemon) -> Iterator[Any]:
    driver = chromium()
    yield driver
    driver.quit()


def loaded_images(driver: Any, css: str) -> list[int]:
    """naturalWidth of every image under ``css``, once the browser has finished them."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]))"
        ".map(i => i.complete ? i.naturalWidth : -1);", css)


def listed(driver: Any, url: str, name: str) -> Any:
    """The failure ``name`` on the page, once the page's list has seen the note (a note put
    there by hand, not by the pipeline, is seen at the list's next refresh)."""
    def find() -> Any:
        driver.get(url)
        found = driver.find_elements("css selector", f'#falhas li[data-file="{name}"]')
        return found[0] if found else None
    return wait_for(find, 20, interval=1, message=f"{name} among the failures")


def test_the_gallery_shows_each_thumbnail_loaded(shop: Daemon, browser: Any) -> None:
    browser.get(base_url(shop))
    wait_for(lambda: (widths := loaded_images(browser, "#galeria img")) and min(widths) > 0,
             15, message="every gallery image loaded")
    assert len(loaded_images(browser, "#galeria .thumbnail img")) == 2
    text = browser.find_element("css selector", "#galeria").text
    assert "books" in text and "mugs" in text and "loja-a" in text


def test_a_bad_file_shows_its_portuguese_sentence(shop: Daemon, browser: Any) -> None:
    browser.get(base_url(shop))
    failure = browser.find_element("css selector", '#falhas li[data-file="lista.jpg"]')
    assert "O arquivo não é uma foto em um formato aceito" in failure.text
    assert "Salve a imagem em um dos formatos aceitos" in failure.text
    # no photo to preview: a drawn "sem prévia" box, not the browser's broken-image icon
    wait_for(lambda: loaded_images(browser, '#falhas li[data-file="lista.jpg"] img') == [160],
             15, message="the no-preview box drawn")


def test_tentar_de_novo_brings_the_photo_back(shop: Daemon, browser: Any) -> None:
    shutil.copyfile(DATA / "caps_cap_03.jpg", shop.failed / "bone.jpg")
    (shop.failed / "bone.jpg.erro.txt").write_text("Falhou antes.\nTente de novo.\n")
    item = listed(browser, base_url(shop), "bone.jpg")
    item.find_element("css selector", "button").click()

    wait_for(lambda: "acompanhar=" in browser.current_url, 10, message="the tracked page")
    assert not (shop.failed / "bone.jpg").exists()
    assert "aguarda para ser processada de novo" in browser.page_source
    wait_for(lambda: (shop.output / "bone.jpg").exists(), 60, message="its thumbnail")


def test_two_uploads_appear_in_the_gallery_without_a_reload(shop: Daemon, browser: Any) -> None:
    browser.get(base_url(shop))
    browser.find_element("css selector", 'input[name="pasta"]').send_keys("vitrine")
    browser.find_element("css selector", "#fotos").send_keys(
        f"{DATA / 't-shirts.jpg'}\n{DATA / 'stickers.jpg'}")
    browser.find_element("css selector", "#upload button").click()
    wait_for(lambda: "acompanhar=" in browser.current_url, 10, message="the tracked page")
    browser.execute_script("window.sameDocument = true;")

    def both_shown() -> bool:
        thumbs = browser.execute_script(
            "return Array.from(document.querySelectorAll('#galeria .thumbnail img'))"
            ".filter(i => /vitrine/.test(i.src) && i.complete && i.naturalWidth > 0).length;")
        return thumbs == 2
    wait_for(both_shown, 60, interval=0.5, message="both uploads' thumbnails in the gallery")
    assert browser.execute_script("return window.sameDocument === true;")  # no reload
    assert browser.page_source.count("state state_done") == 2


def test_with_language_en_the_page_is_in_english(tmp_path: Path, model_path: Path,
                                                 browser: Any) -> None:
    english = start_shop(tmp_path, photos=(), LANGUAGE="en")
    try:
        browser.get(base_url(english))
        body = browser.find_element("css selector", "body").text
        for words in ("Product photos", "Waiting", "Done today", "Failed today", "Try again",
                      "The file is not a photo in a supported format", "Send photos"):
            assert words in body, words
        assert "Aguardando" not in body
        assert browser.find_element("css selector", "html").get_attribute("lang") == "en"
    finally:
        english.stop()
