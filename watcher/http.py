"""The operations HTTP server (/health, /livez, /readyz, /metrics) and its client.

The routes are served by ``watcher.httpserver``, in a daemon thread: slow or hostile clients
cannot hold its slots (every request has a total deadline for its headers), and the probes have
slots of their own, so a pod is never restarted because other clients were slow. Handlers only
read the daemon's state, so the pipeline never waits on them.

With ``HTTP_PORT=0`` the kernel picks the port. The bound address is logged ("HTTP server on
http://…") and written to ``produtos/.thumbgen/http.json`` (``{"url", "host", "port", "pid",
"worker_id"}``), which ``thumbgen health`` reads when ``HTTP_PORT`` is 0. Several daemons with
``HTTP_PORT=0`` on one share overwrite each other's file: give each a port, or pass ``--url``.
"""

from __future__ import annotations

import errno
import json
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from loguru import logger
from prometheus_client.exposition import choose_encoder

from watcher import __version__
from watcher.config import Settings
from watcher.errors import ConfigError
from watcher.httpserver import BoundedHandler, BoundedHTTPServer

if TYPE_CHECKING:
    from watcher.health import Health
    from watcher.metrics import Metrics

ADDRESS_FILE = "http.json"
# What Kubernetes, Prometheus and `thumbgen health` ask: served from slots no other path takes.
PROBES = ("/livez", "/readyz", "/health", "/metrics")
EXIT_HEALTHY, EXIT_DEGRADED, EXIT_UNHEALTHY = 0, 1, 2
_EXIT_BY_STATUS = {"healthy": EXIT_HEALTHY, "degraded": EXIT_DEGRADED}


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"


# A route gets the request headers and answers.
Route = Callable[[Mapping[str, str]], Response]


def _json(status: int, doc: Any) -> Response:
    return Response(status, (json.dumps(doc, indent=2, default=str) + "\n").encode())


def routes(health: Health | None, metrics: Metrics | None) -> dict[str, Route]:
    """Switched on: /health, /livez, /readyz with ``health``; /metrics with ``metrics``; and ``/``
    listing them when any is."""
    table: dict[str, Route] = {}
    if health is not None:
        def health_doc(headers: Mapping[str, str]) -> Response:
            doc = health.document()
            return _json(503 if doc["status"] == "unhealthy" else 200, doc)

        def probe(check: Callable[[], Any], key: str) -> Route:
            def answer(headers: Mapping[str, str]) -> Response:
                verdict = check()
                return _json(200 if verdict.ok else 503,
                             {key: verdict.ok, "problems": verdict.problems})
            return answer

        table.update({"/health": health_doc, "/livez": probe(health.live, "live"),
                      "/readyz": probe(health.ready, "ready")})
    if metrics is not None:
        registry = metrics.registry

        def scrape(headers: Mapping[str, str]) -> Response:
            encoder, content_type = choose_encoder(headers.get("Accept", ""))
            return Response(200, encoder(registry), content_type)

        table["/metrics"] = scrape
    if table:  # someone who opens the address in a browser learns what is there
        listing = {"service": f"thumbgen {__version__}", "endpoints": sorted(table)}
        table["/"] = table["/api"] = lambda headers: _json(200, listing)
    return table


class Page(Protocol):
    """The shop's page (``watcher.web``): answers what the operations table does not, and ``/``
    unless the client asks for JSON. It writes its whole answer through the handler."""

    def handle(self, handler: BoundedHandler) -> None: ...


def _wants_json(headers: Mapping[str, str]) -> bool:
    accept = headers.get("Accept", "")
    return "application/json" in accept and "text/html" not in accept


class _Handler(BoundedHandler):
    server: OpsServer
    server_version = f"thumbgen/{__version__}"
    sys_version = ""

    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        self._answer(send_body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(send_body=False)

    def do_POST(self) -> None:  # noqa: N802
        if self.server.page is None:
            self.send_error(501)  # as before the page: no POST route at all
        else:
            self.server.page.handle(self)

    def _answer(self, send_body: bool) -> None:
        path = urlsplit(self.path).path
        route = self.server.table.get(path)
        page = self.server.page
        if page is not None and (route is None or (path == "/" and not _wants_json(self.headers))):
            page.handle(self)
            return
        if route is None:
            response = Response(404, b"not found\n", "text/plain")
        else:
            try:
                response = route(self.headers)
            except Exception:  # one request's bug never takes the server down
                logger.exception("HTTP {} failed", path)
                response = Response(500, b"internal error\n", "text/plain")
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if send_body:
            self.wfile.write(response.body)


class OpsServer(BoundedHTTPServer):
    """The bounded server with the route table, the probes on their reserved slots."""

    def __init__(self, address: tuple[str, int], table: dict[str, Route],
                 page: Page | None = None, **bounds: Any) -> None:
        self.table = table
        self.page = page
        super().__init__(address, _Handler, reserved_paths=PROBES, **bounds)


class Server:
    """The server in its own daemon thread; ``url`` is known once ``start()`` has bound."""

    def __init__(self, host: str, port: int, table: dict[str, Route], page: Page | None = None,
                 **bounds: Any) -> None:
        """``bounds``: keywords of ``BoundedHTTPServer`` (slots, deadlines), for the tests."""
        self.host = host
        self.port = port
        self.table = table
        self.page = page
        self.bounds = bounds
        self.address_file: Path | None = None
        self._httpd: OpsServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        try:
            self._httpd = OpsServer((self.host, self.port), self.table, self.page,
                                    **self.bounds)
        except OSError as exc:
            why = f"cannot listen there: {exc.strerror or exc}"
            if exc.errno == errno.EADDRINUSE:
                why += ("; if another thumbgen runs on this host, give each its own HTTP_PORT "
                        "(0 picks a free port)")
            raise ConfigError("HTTP_PORT", f"{self.host}:{self.port}", why) from None
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="http",
                                        daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{_connect_host(self.host)}:{self.port}"

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self.address_file is not None:
            remove_address(self.address_file)


def _connect_host(host: str) -> str:
    """Where a local client reaches a server bound to ``host``."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def serve(settings: Settings, health: Health | None, metrics: Metrics | None,
          page: Page | None = None) -> Server | None:
    """Start the server with the endpoints the settings switch on, and the shop's ``page``;
    None when all are off."""
    table = routes(health if settings.health_check_enabled else None,
                   metrics if settings.metrics_enabled else None)
    if not table and page is None:
        logger.info("HTTP server off (HEALTH_CHECK_ENABLED and METRICS_ENABLED are false)")
        return None
    server = Server(settings.http_host, settings.http_port, table, page)
    server.start()
    try:
        server.address_file = write_address(settings.state_path, server, settings.worker_id)
    except OSError as exc:  # only `thumbgen health` with HTTP_PORT=0 needs it
        logger.warning("cannot write {}: {}", settings.state_path / ADDRESS_FILE, exc)
    logger.info("HTTP server on {}{} ({}{})", server.url, _reach(settings.http_host),
                " ".join(sorted(table)), " and the shop's page" if page is not None else "")
    return server


def _reach(host: str) -> str:
    """What the logged address leaves out: a wildcard bind answers on every address, and the
    URL shown is only where this host reaches it."""
    if host in ("", "0.0.0.0", "::"):
        return f", listening on all addresses ({host or '0.0.0.0'})"
    return ""


# -- the address file ------------------------------------------------------------------------------

def write_address(state: Path, server: Server, worker_id: str) -> Path:
    state.mkdir(parents=True, exist_ok=True)
    doc = {"url": server.url, "host": server.host, "port": server.port, "pid": os.getpid(),
           "worker_id": worker_id}
    tmp = state / f".{ADDRESS_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(doc) + "\n")
    os.replace(tmp, state / ADDRESS_FILE)
    return state / ADDRESS_FILE


def remove_address(path: Path) -> None:
    """Remove the address file if it is still ours (another daemon may have replaced it)."""
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def daemon_url(settings: Settings) -> str:
    """The running daemon's base URL: from the settings, or the address file when the port is 0."""
    if settings.http_port:
        return f"http://{_connect_host(settings.http_host)}:{settings.http_port}"
    path = settings.state_path / ADDRESS_FILE
    try:
        return str(json.loads(path.read_text())["url"])
    except (OSError, ValueError, KeyError):
        raise ConfigError("HTTP_PORT", 0, f"the port is chosen at start and {path} does not "
                          "name it: is the daemon running? (or pass --url)") from None


# -- the client: `thumbgen health` -----------------------------------------------------------------

@dataclass(frozen=True)
class HealthReport:
    code: int  # 0 healthy, 1 degraded, 2 unhealthy or unreachable
    document: dict[str, Any] | None
    error: str = ""


def fetch_health(url: str, timeout: float = 5.0) -> HealthReport:
    """GET ``url``/health; unreachable, not JSON or unhealthy all give exit code 2."""
    target = url.rstrip("/") + "/health"
    # no proxies: the daemon is local, and an http_proxy variable must not reroute the check
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(target, timeout=timeout) as answer:
            body = answer.read()
    except urllib.error.HTTPError as exc:  # 503 still carries the document
        body = exc.read()
        if exc.code == 404:
            return HealthReport(EXIT_UNHEALTHY, None, f"{target}: 404 (is HEALTH_CHECK_ENABLED "
                                "false?)")
    except (OSError, ValueError) as exc:
        return HealthReport(EXIT_UNHEALTHY, None, f"{target} unreachable: {exc}")
    try:
        doc = json.loads(body)
        status = doc["status"]
    except (ValueError, KeyError, TypeError):
        return HealthReport(EXIT_UNHEALTHY, None, f"{target} did not answer a health document")
    return HealthReport(_EXIT_BY_STATUS.get(status, EXIT_UNHEALTHY), doc)


__all__ = ["Server", "serve", "routes", "Response", "fetch_health", "HealthReport", "daemon_url",
           "write_address", "remove_address", "ADDRESS_FILE", "PROBES"]
