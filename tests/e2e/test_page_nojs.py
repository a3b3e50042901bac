"""The shop's page with JavaScript off (a real chromium, scripts disabled): plain forms do all."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser import chromium
from tests.e2e.conftest import Daemon, wait_for
from tests.e2e.test_ops import base_url
from tests.e2e.test_page_browser import DATA, listed, start_shop

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[Daemon]:
    d = start_shop(tmp_path_factory.mktemp("nojs"), photos=(), junk=False)
    yield d
    d.stop()


@pytest.fixture(scope="module")
def browser(shop: Daemon) -> Iterator[Any]:
    driver = chromium(javascript=False)
    yield driver
    driver.quit()


def test_upload_and_retry_work_with_javascript_off(shop: Daemon, browser: Any) -> None:
    browser.get(base_url(shop))
    assert browser.execute_script is not None
    browser.find_element("css selector", "#fotos").send_keys(str(DATA / "dresses_dress_02.jpg"))
    browser.find_element("css selector", "#upload button").click()
    wait_for(lambda: "acompanhar=" in browser.current_url, 10, message="the tracked page")
    assert "1 foto(s) enviada(s)" in browser.page_source

    def done() -> bool:
        browser.refresh()  # no script: the shop reloads, as it would
        return "state state_done" in browser.page_source
    wait_for(done, 60, interval=1, message="the upload shown done")
    assert (shop.output / "dresses_dress_02.jpg").exists()

    shutil.copyfile(DATA / "jeans_man_jeans_01.jpg", shop.failed / "jeans.jpg")
    (shop.failed / "jeans.jpg.erro.txt").write_text("Falhou.\nTente.\n")
    listed(browser, base_url(shop), "jeans.jpg").find_element("css selector", "button").click()
    wait_for(lambda: "acompanhar=" in browser.current_url, 10, message="the tracked page")
    assert not (shop.failed / "jeans.jpg.erro.txt").exists()
    wait_for(lambda: (shop.output / "jeans.jpg").exists(), 60, message="the retried thumbnail")
