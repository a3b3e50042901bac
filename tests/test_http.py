"""The operations HTTP server: routing, bounds, the address file, the `thumbgen health` client."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from loguru import logger
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from tests.slow_client import probe_while_trickling
from watcher import config, http
from watcher.errors import ConfigError
from watcher.metrics import Metrics

PROBES = ("/livez", "/readyz", "/health", "/metrics")  # what Kubernetes and Prometheus ask


def _get(url: str, method: str = "GET", headers: Mapping[str, str] | None = None,
         timeout: float = 5) -> tuple[int, dict[str, str], bytes]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, method=method, headers=dict(headers or {}))
    try:
        with opener.open(request, timeout=timeout) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _doc(status: str) -> http.Route:
    code = 503 if status == "unhealthy" else 200
    return lambda headers: http.Response(code, json.dumps({"status": status}).encode())


@pytest.fixture
def serve() -> Iterator[Callable[..., http.Server]]:
    servers: list[http.Server] = []

    def start(table: dict[str, http.Route], **kw: Any) -> http.Server:
        server = http.Server("127.0.0.1", 0, table, **kw)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_port_zero_binds_a_free_port_and_routes_answer(serve: Callable[..., http.Server]) -> None:
    server = serve({"/livez": _doc("healthy")})

    assert server.port > 0 and server.url == f"http://127.0.0.1:{server.port}"
    status, headers, body = _get(server.url + "/livez?verbose=1")
    assert (status, json.loads(body)) == (200, {"status": "healthy"})
    assert headers["Content-Type"] == "application/json"
    assert headers["Cache-Control"] == "no-store"
    assert _get(server.url + "/nope")[0] == 404
    status, headers, body = _get(server.url + "/livez", method="HEAD")
    assert (status, body) == (200, b"") and int(headers["Content-Length"]) > 0
    assert _get(server.url + "/livez", method="POST")[0] == 501


def test_a_port_in_use_is_a_configuration_error(serve: Callable[..., http.Server]) -> None:
    taken = serve({})
    with pytest.raises(ConfigError) as err:
        http.Server("127.0.0.1", taken.port, {}).start()
    assert err.value.key == "HTTP_PORT"
    assert "give each its own HTTP_PORT" in err.value.reason


def test_a_failing_route_answers_500_and_the_server_goes_on(
        serve: Callable[..., http.Server]) -> None:
    def broken(headers: Mapping[str, str]) -> http.Response:
        raise RuntimeError("bug")

    server = serve({"/broken": broken, "/livez": _doc("healthy")})
    assert _get(server.url + "/broken")[0] == 500
    assert _get(server.url + "/livez")[0] == 200


class _Held:
    """A route that holds its slot until released, and tells when a request is in it."""

    def __init__(self) -> None:
        self.entered = threading.Semaphore(0)
        self.release = threading.Event()

    def __call__(self, headers: Mapping[str, str]) -> http.Response:
        self.entered.release()
        self.release.wait(10)
        return http.Response(200, b"done\n", "text/plain")

    def hold(self, url: str) -> threading.Thread:
        thread = threading.Thread(target=_get, args=(url,), daemon=True)
        thread.start()
        assert self.entered.acquire(timeout=5), f"{url} did not reach its route"
        return thread


def test_busy_requests_are_refused_at_once_and_probes_keep_slots_of_their_own(
        serve: Callable[..., http.Server]) -> None:
    page, health = _Held(), _Held()
    server = serve({"/page": page, "/health": health, "/livez": _doc("healthy")},
                   max_concurrent=1, reserved_slots=1)
    # a probe takes its reserved slot first, so the shared one is still there for the page
    holders = [health.hold(server.url + "/health"), page.hold(server.url + "/page")]
    started = time.monotonic()
    status, headers, body = _get(server.url + "/page")
    assert (status, body, headers["Retry-After"]) == (503, b"busy\n", "1")
    assert _get(server.url + "/livez")[0] == 503  # both slots taken
    assert time.monotonic() - started < 0.5
    health.release.set()
    holders[0].join(5)
    # the page holds every shared slot: other paths are refused, the probes are not
    assert _get(server.url + "/elsewhere")[0] == 503
    assert _get(server.url + "/livez")[0] == 200
    page.release.set()
    holders[1].join(5)
    # a slot again, once the handler that answered the page has let go of it (its client can
    # read the whole answer a moment before that)
    deadline = time.monotonic() + 5
    while (status := _get(server.url + "/elsewhere")[0]) == 503 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert status == 404


def test_slow_clients_neither_starve_the_probes_nor_stay(
        serve: Callable[..., http.Server]) -> None:
    server = serve({path: _doc("healthy") for path in PROBES})
    # 12 connections, more than the request slots, each sending a header byte every 1.5-3 s
    probes, slow = probe_while_trickling(server.url, server.port, PROBES)
    assert {p.path for p in probes} == set(PROBES)
    assert [p for p in probes if p.status != 200 or p.seconds > 0.5] == []
    # each is closed at the 5 s deadline for its request line and headers, whatever its pace
    closed = sorted(t.closed_after or -1 for t in slow)
    assert 4.5 <= closed[0] and closed[-1] <= 6.5, closed
    assert all(t.answer.startswith(b"HTTP/1.0 408 ") for t in slow), [t.answer for t in slow]


def test_metrics_route_serves_the_registry_in_both_formats() -> None:
    metrics = Metrics(CollectorRegistry())
    metrics.files.labels("done").inc(3)
    table = http.routes(None, metrics)
    assert set(table) == {"/", "/api", "/metrics"}  # health endpoints off
    assert json.loads(table["/"]({}).body)["endpoints"] == ["/metrics"]

    plain = table["/metrics"]({})
    samples = {(s.name, s.labels.get("outcome")): s.value
               for family in text_string_to_metric_families(plain.body.decode())
               for s in family.samples}
    assert samples[("thumbgen_files_total", "done")] == 3
    assert plain.content_type.startswith("text/plain")
    open_metrics = table["/metrics"]({"Accept": "application/openmetrics-text; version=1.0.0"})
    assert open_metrics.content_type.startswith("application/openmetrics-text")
    assert open_metrics.body.rstrip().endswith(b"# EOF")


def test_serve_writes_the_address_file_and_removes_it_at_stop(
        make_settings: Callable[..., config.Settings]) -> None:
    settings = make_settings(HTTP_PORT=0)
    server = http.serve(settings, None, Metrics(CollectorRegistry()))
    assert server is not None
    try:
        address = json.loads((settings.state_path / http.ADDRESS_FILE).read_text())
        assert address["url"] == server.url and address["port"] == server.port
        assert http.daemon_url(settings) == server.url
        assert _get(server.url + "/metrics")[0] == 200
        assert _get(server.url + "/health")[0] == 404
    finally:
        server.stop()
    assert not (settings.state_path / http.ADDRESS_FILE).exists()
    with pytest.raises(ConfigError, match="pass --url"):
        http.daemon_url(settings)


@pytest.mark.parametrize(("host", "said"), [
    ("0.0.0.0", "listening on all addresses (0.0.0.0)"), ("127.0.0.1", None)])
def test_the_log_says_when_the_server_answers_on_every_address(
        make_settings: Callable[..., config.Settings], host: str, said: str | None) -> None:
    # in a container HTTP_HOST is 0.0.0.0: the URL logged is where this host reaches it, and
    # the line must not read as "loopback only"
    lines: list[str] = []
    sink = logger.add(lines.append, format="{message}")
    settings = make_settings(HTTP_PORT=0, HTTP_HOST=host)
    server = http.serve(settings, None, Metrics(CollectorRegistry()))
    assert server is not None
    server.stop()
    logger.remove(sink)
    (line,) = [line for line in lines if line.startswith("HTTP server on")]
    assert line.startswith(f"HTTP server on http://127.0.0.1:{server.port}")
    assert (said in line) if said else ("listening on" not in line)


def test_serve_starts_nothing_when_every_endpoint_is_off(
        make_settings: Callable[..., config.Settings]) -> None:
    settings = make_settings(HTTP_PORT=0, METRICS_ENABLED="false",
                             HEALTH_CHECK_ENABLED="false")
    assert http.serve(settings, None, Metrics(CollectorRegistry())) is None


def test_daemon_url_from_host_and_port(make_settings: Callable[..., config.Settings]) -> None:
    assert http.daemon_url(make_settings(HTTP_PORT=9000)) == "http://127.0.0.1:9000"
    assert http.daemon_url(make_settings(HTTP_HOST="0.0.0.0", HTTP_PORT=1)) == (
        "http://127.0.0.1:1")
    assert http.daemon_url(make_settings(HTTP_HOST="::", HTTP_PORT=2)) == "http://[::1]:2"


@pytest.mark.parametrize(("status", "code"), [("healthy", 0), ("degraded", 1),
                                              ("unhealthy", 2)])
def test_fetch_health_maps_the_status_to_the_exit_code(
        serve: Callable[..., http.Server], monkeypatch: pytest.MonkeyPatch, status: str,
        code: int) -> None:
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # must not be used for our daemon
    server = serve({"/health": _doc(status)})
    report = http.fetch_health(server.url)
    assert (report.code, report.document) == (code, {"status": status})


def test_fetch_health_when_the_daemon_is_not_there_or_not_serving_health(
        serve: Callable[..., http.Server]) -> None:
    down = http.fetch_health(f"http://127.0.0.1:{_closed_port()}", timeout=2)
    assert down.code == 2 and down.document is None and "unreachable" in down.error

    off = http.fetch_health(serve({"/metrics": _doc("healthy")}).url)
    assert off.code == 2 and "HEALTH_CHECK_ENABLED" in off.error

    garbage = serve({"/health": lambda h: http.Response(200, b"<html>", "text/html")})
    assert http.fetch_health(garbage.url).code == 2
