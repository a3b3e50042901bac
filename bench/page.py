"""Section 6: the daemon's memory with the shop's page open while 200 photos become thumbnails.

The page is kept open the way its script keeps it: the live part fetched every 2 s, and then
every page of the gallery read; each time with every image it names (thumbnail previews, and
previews of the 12 MP originals, which the daemon decodes and redraws) fetched again, as a
browser without a cache would: the worst case for the daemon. RSS of the daemon and
its children sampled every 50 ms, as in section 3; target: peak ≤ 500 MB.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path

from background import Background
from daemon import Daemon, RssSampler
from report import mib, table

SUMMARY: dict[str, float] = {}
_IMAGES = re.compile(r'<img src="([^"]+)"')
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get(url: str) -> bytes:
    with _OPENER.open(url, timeout=60) as answer:
        return answer.read()


class OpenPage(Background):
    """What a browser with the page open asks for: the live part every 2 s, and its images."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.requests = 0
        self.images = 0
        super().__init__("open-page")

    def _loop(self) -> None:
        self.read(self.url + "/")
        while not self._stop.wait(2.0):
            self.read(self.url + "/parte")

    def read(self, address: str) -> str:
        html = _get(address).decode()
        self.requests += 1
        for src in dict.fromkeys(_IMAGES.findall(html)):
            _get(self.url + src)
            self.images += 1
        return html

    def every_page(self) -> int:
        """Read the whole gallery, page after page, with every image; returns the pages."""
        pages = 1
        html = self.read(self.url + "/")
        while (match := re.search(r'href="(/\?pagina=\d+)" rel="next"', html)):
            html = self.read(self.url + match.group(1).replace("&amp;", "&"))
            pages += 1
        return pages


def page_rss(photos: list[Path], count: int = 200) -> list[str]:
    names = [f"{i:03d}-{photos[i % len(photos)].name}" for i in range(count)]
    sources = [photos[i % len(photos)] for i in range(count)]
    with Daemon("page") as d:
        d.start()
        url = json.loads((d.inbox / ".thumbgen" / "http.json").read_text())["url"]
        time.sleep(0.5)
        idle = d.rss()
        with RssSampler(d) as sampler, OpenPage(url) as page:
            start = d.drop(sources, names)
            end = d.wait_finished(count, 900)
            pages = page.every_page()
            time.sleep(1.0)
        processing_peak = max(sampler.between(start, end or time.monotonic()), default=0)
    if end is None:
        return [f"  timed out: {d.finished()} of {count} finished"]
    peak = sampler.peak
    SUMMARY["page_rss"] = peak
    rows = [("daemon started, idle", mib(idle)),
            ("peak while the 200 photos were processed, page open", mib(processing_peak)),
            ("peak over the whole run, the gallery read page by page", mib(peak))]
    return [f"  {count} photos of 12 MP dropped at once, WORKERS=2; the page open: "
            f"{page.requests} page requests, {page.images} images, {pages} gallery pages; "
            f"{count / (end - start):.1f} images/s",
            table(["RSS (daemon + children)", "value"], rows),
            f"\n  target: peak ≤ 500 MB → {mib(peak)} "
            f"({'met' if peak <= 500 * 1024**2 else 'NOT met'})"]
