"""docs/status-page.png: the shop's page over the sample photos, taken by headless Chromium.

Starts the real daemon (local model) on a temporary tree with the photos of tests/data/products
in two shop folders and one file that is no photo, waits until they are done, and has Debian's
chromium (driven by Selenium) photograph the page. Usage: tools/screenshot.py OUT.png
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

REPO = Path(__file__).resolve().parent.parent
PHOTOS = REPO / "tests" / "data" / "products"
THUMBGEN = str(Path(sys.executable).with_name("thumbgen"))


def wait(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise SystemExit(f"screenshot: timed out waiting for {what}")


def main(out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="thumbgen-screenshot-") as tmp:
        base = Path(tmp)
        for name in ("produtos/loja-centro", "produtos/loja-praia", "backgrounds",
                     "thumbnails-prontas"):
            (base / name).mkdir(parents=True)
        photos = sorted(PHOTOS.glob("*.jpg"))
        for n, photo in enumerate(photos):
            shop = "loja-centro" if n % 2 else "loja-praia"
            shutil.copyfile(photo, base / "produtos" / shop / photo.name)
        (base / "produtos" / "loja-centro" / "lista-de-precos.jpg").write_text("R$ 10,00\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("THUMBGEN_")}
        env.update(THUMBGEN_BASE_PATH=str(base), THUMBGEN_REMOVAL_BACKEND="local",
                   THUMBGEN_HTTP_PORT="0", THUMBGEN_SETTLE_SECONDS="0.3",
                   THUMBGEN_SCHEDULER_ENABLED="false", THUMBGEN_OUTPUT_SIZE="600")
        daemon = subprocess.Popen([THUMBGEN, "run"], cwd=base, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            address = base / "produtos" / ".thumbgen" / "http.json"
            url = wait(lambda: address.exists() and json.loads(address.read_text())["url"], 60,
                       "the daemon's address")
            wait(lambda: len(list((base / "produtos" / "_processados").rglob("*.jpg")))
                 == len(photos), 180, "the sample photos")
            wait(lambda: list((base / "produtos" / "_falhas").rglob("*.erro.txt")), 60,
                 "the file that is no photo in _falhas/")
            options = webdriver.ChromeOptions()
            options.binary_location = "/usr/bin/chromium"
            for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                        "--no-proxy-server", "--window-size=1280,1700", "--hide-scrollbars"):
                options.add_argument(arg)
            driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
            try:
                driver.get(url)
                wait(lambda: driver.execute_script(
                    "return Array.from(document.images).every(i => i.complete);"), 30,
                    "the page's images")
                out.parent.mkdir(parents=True, exist_ok=True)
                driver.save_screenshot(str(out))
            finally:
                driver.quit()
        finally:
            daemon.terminate()
            daemon.wait(60)
    print(f"screenshot: {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/status-page.png"))
