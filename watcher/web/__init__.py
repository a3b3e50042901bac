"""The shop's page: what was made, what failed and why, **Tentar de novo**, and an upload form.

Served at ``/`` by the daemon's bounded HTTP server (``watcher.httpserver``), beside the
operations endpoints of ``watcher.http``, which stay as they are: the probes keep their own slots
while photos upload. The page reads the ``App`` it is given and writes only two ways: an upload
renamed into the inbox once complete (``upload``), and a rejected photo moved back into it
(``failures``). In ``LANGUAGE``, from the catalogues of ``watcher.messages``.

- ``routes``: the requests; ``view``: what the templates read; ``templates/``, ``static/``.
- ``recent``: the gallery's bounded index; ``failures``: the rejected photos and sending one back;
  ``previews``: re-encoded previews, cached and bounded; ``upload``: streaming multipart.
- ``files``: the only way to a file (no ``..``, no links, nothing outside its folder);
  ``guard``: ``UI_TOKEN``, the page token and ``Origin`` against cross-site requests.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from loguru import logger

from watcher.errors import make_folder
from watcher.model import Job, JobStatus
from watcher.web import routes, upload
from watcher.web.failures import Failures
from watcher.web.guard import Guard
from watcher.web.previews import Previews
from watcher.web.recent import Recent
from watcher.web.track import Tracker

if TYPE_CHECKING:  # the app is passed in; importing it at run time would invert the layers
    from watcher.app import App
    from watcher.httpserver import BoundedHandler

# Uploads: photos in one request, requests receiving at once (the others get "busy").
MAX_FILES = 20
MAX_CONCURRENT_UPLOADS = 2


class Page:
    def __init__(self, app: App, *, max_files: int = MAX_FILES,
                 max_uploads: int = MAX_CONCURRENT_UPLOADS) -> None:
        s = app.settings
        self.app = app
        self.max_files = max_files
        self.recent = Recent(s.output_path, s.upload_path, s.plan)
        self.failures = Failures(s.failed_path, s.upload_path)
        self.previews = Previews(s.max_file_size, s.max_pixels)
        self.guard = Guard(s.http_host, s.ui_token)
        self.tracker = Tracker()
        self.uploads = threading.BoundedSemaphore(max_uploads)
        self.upload_dir = s.state_path / "uploads"
        self.templates = Environment(loader=PackageLoader("watcher.web"),
                                     autoescape=select_autoescape(default=True),
                                     undefined=StrictUndefined, trim_blocks=True,
                                     lstrip_blocks=True)

    def attach(self) -> None:
        """Follow the pipeline's results, and index what is already on disk (bounded)."""
        make_folder(self.upload_dir, "UPLOAD_PATH")  # under UPLOAD_PATH's .thumbgen/
        upload.clear_stale(self.upload_dir)
        found = self.recent.load()
        self.app.pool.on_finished.append(self._finished)
        logger.debug("shop's page: {} photo(s) in the gallery at start", found)

    def _finished(self, job: Job) -> None:
        try:
            if job.status is JobStatus.DONE:
                self.recent.record(job.rel)
            elif job.status in (JobStatus.REJECTED, JobStatus.FAILED):
                self.failures.stale()
        except Exception:  # the page's bookkeeping never disturbs a worker
            logger.exception("the shop's page could not note {}", job.rel)

    def handle(self, handler: BoundedHandler) -> None:
        routes.handle(self, handler)


__all__ = ["Page", "MAX_FILES", "MAX_CONCURRENT_UPLOADS"]
