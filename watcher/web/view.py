"""What the page shows, as plain data for the templates: read from the running App, the gallery's
index, the failures and the tracked uploads. Nothing here writes."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from watcher import messages
from watcher.health import remover_state
from watcher.inbox import is_ignored_name
from watcher.web.recent import Made

if TYPE_CHECKING:
    from watcher.web import Page

PER_PAGE = 48
FAILURES_SHOWN = 48
MAX_FOLDERS = 500


@dataclass(frozen=True)
class Query:
    """The page's address: which page of the gallery, which shop folder, which batch."""

    page: int = 1
    folder: str | None = None
    batch: str = ""

    @classmethod
    def parse(cls, values: dict[str, list[str]]) -> Query:
        def first(name: str) -> str:
            return values.get(name, [""])[0][:200]
        number = first("pagina")
        return cls(int(number) if number.isdigit() and 0 < int(number) < 10**6 else 1,
                   first("pasta") or None, first("acompanhar"))

    def link(self, **changes: Any) -> str:
        values = {"pagina": self.page, "pasta": self.folder or "", "acompanhar": self.batch,
                  **changes}
        shown = {k: v for k, v in values.items() if v and not (k == "pagina" and v == 1)}
        return "/?" + urlencode(shown) if shown else "/"


def _url(prefix: str, rel: str) -> str:
    return prefix + quote(rel, safe="/")


def when_text(when: float) -> str:
    stamp = time.localtime(when)
    if stamp[:3] == time.localtime()[:3]:
        return time.strftime("%H:%M", stamp)
    return time.strftime("%d/%m %H:%M", stamp)


def removal(page: Page) -> str:
    """The catalogue key of how backgrounds are removed now."""
    app = page.app
    if app.settings.removal_kind == "local":
        return "removal_local"
    state = remover_state(app.remover)
    if state.get("fallback_in_use") or state.get("fallback_active"):
        return "removal_local_fallback"
    breaker = state.get("breaker", state.get("breaker_state"))
    down = breaker == "open" or state.get("reachable", state.get("remote_reachable")) is False
    if down or state.get("waiting"):
        return ("removal_local_fallback" if app.settings.gradio_fallback_enabled
                else "removal_waiting")
    return "removal_remote"


def _made(item: Made) -> dict[str, Any]:
    several = len(item.outputs) > 1
    return {"name": item.name, "folder": item.folder, "when": when_text(item.when),
            "original": _url("/previa/entrada/", item.original) if item.original else None,
            "outputs": [{"label": out.split("/", 1)[0] if several else "",
                         "full": _url("/miniatura/", out),
                         "preview": _url("/previa/saida/", out)} for out in item.outputs]}


def folders(page: Page) -> list[str]:
    """Shop folders: those in the inbox (a bounded look) and those in the gallery."""
    found = set(page.recent.folders())
    try:
        with os.scandir(page.app.settings.upload_path) as entries:
            for n, entry in enumerate(entries):
                if n >= MAX_FOLDERS:
                    break
                if entry.is_dir(follow_symlinks=False) and not is_ignored_name(entry.name):
                    found.add(entry.name)
    except OSError:
        pass
    return sorted(found, key=str.casefold)


def _tracked(page: Page, key: str) -> dict[str, Any] | None:
    batch = page.tracker.get(key) if key else None
    if batch is None:
        return None
    working = {str(job.rel) for job in list(page.app.pool.in_flight.values())}
    items = []
    for rel in batch.rels:
        item: dict[str, Any] = {"name": rel.as_posix(), "state": "state_waiting",
                                "preview": None, "reason": ""}
        made = page.recent.find(rel.with_suffix("").as_posix(), batch.when)
        failure = page.failures.find(rel.as_posix(), batch.when) if made is None else None
        if made is not None:
            item.update(state="state_done", preview=_made(made)["outputs"][0]["preview"])
        elif failure is not None:
            item.update(state="state_failed", reason=page.failures.lines(failure.rel)[0])
        elif rel.as_posix() in working:
            item["state"] = "state_working"
        items.append(item)
    return {"items": items, "notices": batch.notices}


def context(page: Page, query: Query, headers: dict[str, str], token: str,
            notices: list[tuple[str, dict[str, Any]]] = ()) -> dict[str, Any]:
    """Everything the templates read."""
    app, settings = page.app, page.app.settings
    language = settings.language

    def t(key: str, **fields: Any) -> str:
        return messages.text(language, f"page.{key}", **fields)

    made, total = page.recent.page(query.page, PER_PAGE, query.folder)
    pages = max(1, math.ceil(total / PER_PAGE))
    failures, failed_total = page.failures.listing()
    if query.folder is not None:
        failures = [f for f in failures if f.folder == query.folder]
    shown_failures = []
    for failure in failures[:FAILURES_SHOWN]:
        reason, advice = page.failures.lines(failure.rel)
        shown_failures.append({"rel": failure.rel, "name": PurePosixPath(failure.rel).name,
                               "folder": failure.folder, "reason": reason, "advice": advice,
                               "when": when_text(failure.when),
                               "preview": _url("/previa/entrada/", "_falhas/" + failure.rel)})
    writable = page.guard.may_write(headers)
    tracked = _tracked(page, query.batch)
    if tracked is not None:
        tracked["notices"] = [t(key, **fields) for key, fields in tracked["notices"]]
    return {
        "t": t, "lang": language, "token": token, "query": query,
        "counts": {"waiting": app.queue_depth(), "working": len(app.pool.in_flight),
                   "done_today": page.recent.today("done"),
                   "failed_today": page.failures.today()},
        "removal": t(removal(page)),
        "gallery": [_made(item) for item in made], "page": min(query.page, pages),
        "pages": pages, "newer": query.link(pagina=query.page - 1) if query.page > 1 else None,
        "older": query.link(pagina=query.page + 1) if query.page < pages else None,
        "folders": folders(page), "failures": shown_failures,
        "failures_total": len(failures) if query.folder is not None else failed_total,
        "tracked": tracked,
        "notices": [t(key, **fields) for key, fields in notices],
        "writable": writable, "read_only": page.guard.read_only,
        "needs_code": not writable and not page.guard.read_only,
        "limit_mb": settings.max_file_size / 1024**2,
        "max_files": page.max_files,
    }


Render = Callable[[str, dict[str, Any]], str]

__all__ = ["Query", "context", "PER_PAGE", "removal", "when_text"]
