"""Remote removal against a real Gradio server (``tests/gradio_app.py``), and its parts alone."""

from __future__ import annotations

import http.server
import io
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from loguru import logger
from PIL import Image, ImageStat
from prometheus_client import CollectorRegistry

import numpy as np

from tests.gradio_app import GradioServer, free_port
from watcher import config
from watcher.errors import RejectedImage, RemovalUnavailable
from watcher.metrics import Metrics
from watcher.stages import refine
from watcher.stages.removal import gradio
from watcher.stages.removal.base import Remover
from watcher.stages.removal.breaker import BreakerState, CircuitBreaker
from watcher.stages.removal.cache import MaskCache, content_key
from watcher.stages.removal.gradio import DEFAULT_MAX_SIDE, GradioBackend
from watcher.stages.removal.local import LocalRemover
from watcher.stages.removal.pacing import Backoff, RateLimit
from watcher.stages.removal.resilient import REFUSED_REASON, RemoteRemover

MakeRemover = Callable[..., RemoteRemover]


def product(width: int = 320, height: int = 240, shade: int = 0) -> Image.Image:
    """A red box on white: the box is the product. ``shade`` makes distinct pixels."""
    image = Image.new("RGB", (width, height), (255, 255, 255 - shade))
    image.paste((200, 30 + shade, 30), (width // 4, height // 4, 3 * width // 4, 3 * height // 4))
    return image


def assert_is_the_box(mask: Image.Image, size: tuple[int, int]) -> None:
    w, h = size
    assert mask.mode == "L" and mask.size == size
    inside = ImageStat.Stat(mask.crop((w // 4 + 4, h // 4 + 4, 3 * w // 4 - 4, 3 * h // 4 - 4)))
    corner = ImageStat.Stat(mask.crop((0, 0, w // 5, h // 5)))
    assert inside.mean[0] > 250 and corner.mean[0] < 5


def served(remover: RemoteRemover, image: Image.Image) -> tuple[Image.Image, str]:
    """The mask, and what served it: ``name`` is per thread, so read it in the calling one."""
    return remover.mask(image), remover.name


def requests(metrics: Metrics, backend: str, outcome: str) -> float:
    value = metrics.registry.get_sample_value("thumbgen_removal_requests_total",
                                              {"backend": backend, "outcome": outcome})
    return value or 0.0


@pytest.fixture
def make_remover(tmp_path: Path, model_path: Path) -> Iterator[MakeRemover]:
    """``make(url, ...)``: a RemoteRemover on fresh metrics, fast back-off, temp in tmp_path."""
    made: list[RemoteRemover] = []

    def make(url: str, *, api_name: str = "/png", timeout: float = 5.0, attempts: int = 2,
             max_in_flight: int = 4, fallback: bool = False, cache: bool = False,
             threshold: int = 5, cooldown: float = 30.0, base: float = 0.05,
             cpu_slots: threading.Semaphore | None = None,
             max_side: int = DEFAULT_MAX_SIDE) -> RemoteRemover:
        remover = RemoteRemover(
            GradioBackend(url, api_name, timeout=timeout, temp_dir=tmp_path / "tmp",
                          max_side=max_side),
            Metrics(CollectorRegistry()), max_in_flight=max_in_flight,
            backoff=Backoff(attempts, base=base, cap=1.0),
            breaker=CircuitBreaker(threshold, cooldown),
            cache=MaskCache(tmp_path / "cache", 3600) if cache else None,
            fallback=LocalRemover(model_path) if fallback else None, cpu_slots=cpu_slots)
        made.append(remover)
        return remover

    yield make
    for remover in made:
        remover.close()


@pytest.fixture
def down_url() -> str:
    """A URL where nothing listens."""
    return f"http://127.0.0.1:{free_port()}/"


# -- against the real server -------------------------------------------------------------------

@pytest.mark.parametrize("api_name", ["/png", "/image"])
def test_the_cut_out_comes_from_the_remote(remote: GradioServer, make_remover: MakeRemover,
                                           tmp_path: Path, api_name: str) -> None:
    remover = make_remover(remote.url, api_name=api_name)
    assert isinstance(remover, Remover) and remover.cpu_bound is False

    mask = remover.mask(product())

    assert_is_the_box(mask, (320, 240))
    assert remover.name == "gradio"
    assert remote.stats()["calls"] == {api_name.strip("/"): 1}
    assert requests(remover.metrics, "gradio", "ok") == 1
    state = remover.state()
    assert state["reachable"] is True and state["breaker"] == "closed"
    assert list((tmp_path / "tmp").iterdir()) == []  # upload and download are gone


def test_remote_max_side_bounds_what_is_sent_and_the_mask_comes_back_full_size(
        remote: GradioServer, tmp_path: Path) -> None:
    (tmp_path / "empty.toml").touch()
    settings = config.load(env={
        "THUMBGEN_CONFIG": str(tmp_path / "empty.toml"), "THUMBGEN_BASE_PATH": str(tmp_path),
        "THUMBGEN_GRADIO_API_URL": remote.url, "THUMBGEN_REMOTE_MAX_SIDE": "256",
        "THUMBGEN_CACHE_ENABLED": "false", "THUMBGEN_GRADIO_FALLBACK_ENABLED": "false"})
    remover = gradio.build(settings, Metrics(CollectorRegistry()))
    photo = product(483, 725)  # portrait, and no side a multiple of the reduction
    try:
        mask = remover.mask(photo)
    finally:
        remover.close()

    assert remote.stats()["sizes"] == [[171, 256]]
    assert_is_the_box(mask, photo.size)
    # refine, as the pipeline runs it, puts the edge back on the photo's: off the true box by
    # at most the two pixels of its own soft edge, where the upscale alone is off by more
    box = np.zeros((725, 483), bool)
    box[725 // 4:3 * 725 // 4, 483 // 4:3 * 483 // 4] = True
    off = (np.asarray(refine.refine(mask, photo)) >= 128) != box
    near_edge = np.zeros_like(box)
    near_edge[725 // 4 - 2:3 * 725 // 4 + 2, 483 // 4 - 2:3 * 483 // 4 + 2] = True
    near_edge[725 // 4 + 2:3 * 725 // 4 - 2, 483 // 4 + 2:3 * 483 // 4 - 2] = False
    assert not (off & ~near_edge).any()
    assert ((np.asarray(mask) >= 128) != box).sum() > off.sum()


@pytest.mark.parametrize("result", ["opaque", "squashed"])
def test_a_result_that_is_not_a_cut_out_is_not_used(remote: GradioServer,
                                                    make_remover: MakeRemover,
                                                    result: str) -> None:
    remote.set(result=result)
    remover = make_remover(remote.url, attempts=3)

    with pytest.raises(RemovalUnavailable, match="bad_result"):
        remover.mask(product())
    assert remote.calls() == 1  # an answer that is wrong is not asked again at once


def test_in_flight_calls_never_exceed_the_bound(remote: GradioServer,
                                                make_remover: MakeRemover) -> None:
    remote.set(delay=0.4)
    remover = make_remover(remote.url, max_in_flight=3)

    with ThreadPoolExecutor(8) as pool:
        masks = list(pool.map(remover.mask, [product(shade=n) for n in range(8)]))

    assert len(masks) == 8
    stats = remote.stats()
    assert stats["peak"] == 3 and stats["calls"]["png"] == 8


def test_a_hanging_call_is_cancelled_and_frees_its_queue_slot(
        remote: GradioServer, make_remover: MakeRemover) -> None:
    remote.set(hang_calls=4)  # every slot of the server (concurrency 4) hangs
    remover = make_remover(remote.url, timeout=1.0, attempts=1)

    def timed(image: Image.Image) -> float:
        start = time.monotonic()
        with pytest.raises(RemovalUnavailable, match="timeout"):
            remover.mask(image)
        return time.monotonic() - start

    with ThreadPoolExecutor(4) as pool:
        elapsed = list(pool.map(timed, [product(shade=n) for n in range(4)]))
    assert all(0.9 < t < 5.0 for t in elapsed), elapsed
    assert requests(remover.metrics, "gradio", "timeout") == 4

    # the four calls still hang on the server, yet a new one is served at once
    start = time.monotonic()
    assert_is_the_box(make_remover(remote.url, timeout=5.0).mask(product(shade=9)), (320, 240))
    assert time.monotonic() - start < 5.0
    assert remote.stats()["active"] == 4


def test_a_raising_app_falls_back_to_the_local_model(remote: GradioServer,
                                                     make_remover: MakeRemover) -> None:
    remote.set(**{"raise": "CUDA out of memory"})
    remover = make_remover(remote.url, fallback=True, attempts=3)

    mask = remover.mask(product())

    assert mask.size == (320, 240) and remover.name == "local"
    assert remote.calls() == 1  # an app error is not retried
    assert requests(remover.metrics, "local", "fallback") == 1
    assert "CUDA out of memory" in str(remover.state()["last_error"])


def test_a_raising_app_without_fallback_makes_files_wait_never_reject(
        remote: GradioServer, make_remover: MakeRemover) -> None:
    remote.set(**{"raise": "model crashed"})
    remover = make_remover(remote.url, attempts=2, threshold=50)

    for _ in range(4):  # the same photo, over and over: it waits, it is never rejected
        with pytest.raises(RemovalUnavailable, match="refused"):
            remover.mask(product())
    assert remote.calls() == 4 + 3  # from the second refusal on, a control photo is refused too


def test_without_fallback_a_paused_remote_is_waited_for_briefly(
        remote: GradioServer, make_remover: MakeRemover) -> None:
    remote.set(**{"raise": "model crashed"})
    remover = make_remover(remote.url, threshold=1, cooldown=1.0)
    with pytest.raises(RemovalUnavailable):
        remover.mask(product())
    assert remover.state()["breaker"] == "open"
    remote.set()  # the app is mended

    start = time.monotonic()
    assert_is_the_box(remover.mask(product(shade=3)), (320, 240))  # no trip back to the inbox

    assert 0.5 < time.monotonic() - start < 4.0  # it waited for the probe, then was the probe
    assert remover.state()["breaker"] == "closed"


def test_an_input_the_app_cannot_read_is_rejected_with_a_plain_reason(
        remote: GradioServer, make_remover: MakeRemover) -> None:
    remote.set(refuse_width=321)
    remover = make_remover(remote.url, attempts=2)
    unreadable = product(width=321)

    with pytest.raises(RemovalUnavailable):  # first refusal: maybe the app, maybe the photo
        remover.mask(unreadable)
    remover.mask(product())  # the app serves other photos
    with pytest.raises(RejectedImage) as excinfo:  # refused on every attempt: the photo
        remover.mask(unreadable)

    assert excinfo.value.reason == REFUSED_REASON
    assert excinfo.value.stage == "remove"
    assert "cannot identify image file" in excinfo.value.detail
    assert remote.calls() == 3


def test_a_lone_unreadable_input_is_rejected_once_a_control_photo_is_served(
        remote: GradioServer, make_remover: MakeRemover) -> None:
    remote.set(refuse_width=321)
    remover = make_remover(remote.url, attempts=2)

    with pytest.raises(RemovalUnavailable):
        remover.mask(product(width=321))
    with pytest.raises(RejectedImage):
        remover.mask(product(width=321))

    assert remote.stats()["widths"] == [321, 321, 64]  # the third call: the control photo


def test_a_full_queue_is_retried(remote: GradioServer, make_remover: MakeRemover) -> None:
    remote.set(delay=1.0)  # 4 run, 4 wait in the queue, the rest are told it is full
    remover = make_remover(remote.url, max_in_flight=10, attempts=10, base=0.3)

    with ThreadPoolExecutor(10) as pool:
        masks = list(pool.map(remover.mask, [product(shade=n) for n in range(10)]))

    assert [m.size for m in masks] == [(320, 240)] * 10
    assert remote.calls() == 10
    assert requests(remover.metrics, "gradio", "queue_full") >= 1
    assert requests(remover.metrics, "gradio", "ok") == 10
    assert remover.state()["breaker"] == "closed"  # busy is not down


def test_a_cache_hit_makes_no_call(remote: GradioServer, make_remover: MakeRemover) -> None:
    remover = make_remover(remote.url, cache=True)
    first = remover.mask(product())

    again = remover.mask(product())  # the same pixels in a new image: a re-dropped photo

    assert remote.calls() == 1 and remover.name == "gradio-cache"
    assert again.tobytes() == first.tobytes()
    hits = remover.metrics.registry.get_sample_value("thumbgen_cache_hits_total")
    assert hits == 1


def test_a_mask_cached_at_another_remote_max_side_is_not_served(
        remote: GradioServer, make_remover: MakeRemover) -> None:
    make_remover(remote.url, cache=True, max_side=256).mask(product(width=640, height=480))

    again = make_remover(remote.url, cache=True, max_side=2048)
    again.mask(product(width=640, height=480))  # REMOTE_MAX_SIDE raised: asked again, whole

    assert remote.calls() == 2 and again.name == "gradio"
    assert remote.stats()["widths"][-1] == 640


def test_the_server_killed_mid_call_then_started_again(tmp_path: Path,
                                                      make_remover: MakeRemover) -> None:
    server = GradioServer(tmp_path / "own-server").start()
    try:
        with_fallback = make_remover(server.url, fallback=True, attempts=2)
        waiting = make_remover(server.url, attempts=2)
        server.set(delay=5)
        with ThreadPoolExecutor(2) as pool:
            local = pool.submit(served, with_fallback, product())
            waits = pool.submit(waiting.mask, product(shade=1))
            deadline = time.monotonic() + 10
            while server.stats()["active"] < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            server.kill()  # both calls in flight
            mask, by = local.result(timeout=20)
            with pytest.raises(RemovalUnavailable):  # never a rejection: the file waits
                waits.result(timeout=20)
        assert mask.size == (320, 240) and by == "local"
        for remover in (with_fallback, waiting):
            assert requests(remover.metrics, "gradio", "interrupted") == 1
            assert remover.state()["reachable"] is False  # the retry found nobody there

        server.set()
        server.start()  # same address, a fresh process: the one client carries on
        assert_is_the_box(waiting.mask(product(shade=1)), (320, 240))
        assert waiting.state()["reachable"] is True and server.calls() == 1
    finally:
        server.stop()


def test_the_token_is_never_sent_to_another_host_named_in_an_answer(
        remote: GradioServer, tmp_path: Path) -> None:
    seen: list[dict[str, str]] = []

    class Elsewhere(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            seen.append(dict(self.headers))
            body = io.BytesIO()
            Image.new("RGBA", (32, 24)).save(body, format="PNG")
            self.send_response(200)
            self.send_header("Content-Length", str(body.tell()))
            self.end_headers()
            self.wfile.write(body.getvalue())

        def log_message(self, *args: object) -> None:
            pass

    elsewhere = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Elsewhere)
    threading.Thread(target=elsewhere.serve_forever, daemon=True).start()
    backend = GradioBackend(remote.url, "/png", token="hf_" + "x" * 30, temp_dir=tmp_path)
    try:
        client = backend._get_client()
        assert "x-hf-authorization" in client.headers  # sent to the Gradio app itself
        backend._download(client, f"http://127.0.0.1:{elsewhere.server_port}/r.png",
                          tmp_path / "r.png")
    finally:
        backend.close()
        elsewhere.shutdown()
    assert seen and not any(k.lower() in ("x-hf-authorization", "authorization", "cookie")
                            for k in seen[0])


# -- without a server --------------------------------------------------------------------------

def test_a_remote_that_is_down_falls_back_and_says_so_once(
        down_url: str, make_remover: MakeRemover) -> None:
    remover = make_remover(down_url, fallback=True, threshold=2)
    messages: list[str] = []
    sink = logger.add(lambda m: messages.append(str(m)), level="WARNING")
    try:
        for n in range(4):
            assert remover.mask(product(shade=n)).size == (320, 240)
    finally:
        logger.remove(sink)

    assert remover.name == "local"
    state = remover.state()
    assert state["breaker"] == "open" and state["fallback_in_use"] is True
    assert state["reachable"] is False and state["local_model_loaded"] is True
    assert state["local_runtime"] == {"runtime": "onnxruntime", "precision": "fp32",
                                      "why": "LOCAL_RUNTIME=onnxruntime"}
    assert "unreachable" in str(state["last_error"])
    assert sum("the local model makes the cut-outs" in m for m in messages) == 1
    assert requests(remover.metrics, "gradio", "unreachable") == 2  # then the breaker opened


def test_a_remote_that_is_down_without_fallback_makes_files_wait(
        down_url: str, make_remover: MakeRemover) -> None:
    remover = make_remover(down_url, attempts=3)

    with pytest.raises(RemovalUnavailable, match="unavailable"):
        remover.mask(product())
    assert remover.state()["waiting"] is True


def test_the_fallback_takes_a_cpu_slot(down_url: str, make_remover: MakeRemover) -> None:
    cpu = threading.BoundedSemaphore(1)
    remover = make_remover(down_url, fallback=True, attempts=1, cpu_slots=cpu)
    cpu.acquire()  # every CPU slot busy composing
    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(remover.mask, product())
        time.sleep(0.5)
        assert not call.done()
        cpu.release()
        assert call.result(timeout=10).size == (320, 240)


def test_state_has_the_documented_shape(down_url: str, make_remover: MakeRemover) -> None:
    state = make_remover(down_url).state()
    assert state == {
        "backend": "gradio", "endpoint": f"{down_url.rstrip('/')}/png", "reachable": None,
        "breaker": "closed", "consecutive_failures": 0, "retry_in": 0.0, "last_error": None,
        "last_error_at": None, "last_success_at": None, "fallback_enabled": False,
        "fallback_in_use": False, "local_model_loaded": False, "local_runtime": None,
        "waiting": False, "in_flight": 0, "max_in_flight": 4,
    }


def test_the_url_in_what_the_remote_says_shows_no_password_or_token(
        make_remover: MakeRemover) -> None:
    port = free_port()
    remover = make_remover(f"http://:Pw0rd-g@127.0.0.1:{port}/?lang=pt&token=Tk0-g", attempts=1)

    with pytest.raises(RemovalUnavailable) as caught:
        remover.mask(product())

    state = remover.state()
    # the API name goes into the path, before the query
    assert state["endpoint"] == f"http://****@127.0.0.1:{port}/png?lang=pt&token=****"
    assert f"cannot reach http://****@127.0.0.1:{port}/?lang=pt&token=****: " in str(
        state["last_error"])
    for text in (str(caught.value), str(state)):
        assert "Pw0rd-g" not in text and "Tk0-g" not in text


def test_build_follows_the_settings(tmp_path: Path) -> None:
    (tmp_path / "empty.toml").touch()
    settings = config.load(env={
        "THUMBGEN_CONFIG": str(tmp_path / "empty.toml"), "THUMBGEN_BASE_PATH": str(tmp_path),
        "THUMBGEN_GRADIO_API_URL": "not-lain/background-removal",
        "THUMBGEN_MAX_CONCURRENT_REQUESTS": "7", "THUMBGEN_GRADIO_FALLBACK_ENABLED": "false",
        "THUMBGEN_RESCAN_INTERVAL": "5", "THUMBGEN_RATE_LIMIT_PER_MINUTE": "30"})
    remover = gradio.build(settings, Metrics(CollectorRegistry()))

    assert settings.removal_kind == "gradio"
    assert remover.max_in_flight == 7 and remover.fallback is None
    assert remover.breaker.base_cooldown == 5 and remover.rate_limit.per_minute == 30
    assert remover.cache is not None and remover.cache.folder == settings.state_path / "cache"
    assert remover.remote.endpoint == "not-lain/background-removal/png"
    assert remover.state()["reachable"] is None  # nothing is contacted before the first file


# -- the parts ---------------------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_cools_down_and_probes_once() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=3, cooldown=10, max_cooldown=40, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.failure()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.failure() is True  # the third in a row opens it
    assert not breaker.allow() and breaker.retry_in() == 10

    clock.now += 10
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow() and not breaker.allow()  # one probe at a time
    breaker.inconclusive()  # the probe found the service busy: the next caller probes
    assert breaker.state is BreakerState.HALF_OPEN and breaker.allow()
    assert breaker.failure() is False  # the probe failed: open again (no new outage), and
    assert breaker.state is BreakerState.OPEN  # wait twice as long
    clock.now += 10
    assert not breaker.allow()
    clock.now += 10
    assert breaker.allow()
    breaker.success()
    assert breaker.state is BreakerState.CLOSED and breaker.allow() and breaker.failures == 0


def test_backoff_grows_with_jitter_and_a_cap() -> None:
    backoff = Backoff(attempts=5, base=0.5, cap=2.0)
    assert backoff.delay(1, rng=lambda: 0.0) == 0.25
    assert backoff.delay(1, rng=lambda: 0.999) < 0.5
    assert backoff.delay(2, rng=lambda: 0.0) == 0.5
    assert backoff.delay(10, rng=lambda: 0.0) == 1.0  # half of the cap at least, never above


def test_rate_limit_allows_n_per_minute() -> None:
    clock = Clock()
    limit = RateLimit(3, clock=clock)
    stop = threading.Event()
    assert all(limit.acquire(stop) for _ in range(3))
    threading.Timer(0.2, stop.set).start()
    assert limit.acquire(stop) is False  # the fourth waits, until told to stop
    clock.now += 60
    assert limit.acquire(threading.Event())
    assert RateLimit(0).acquire(stop)  # 0 = no limit


def test_cache_expires_bounds_its_size_and_survives_damage(tmp_path: Path) -> None:
    clock = Clock()
    masks = {content_key(product(shade=n), "t", "e"): product(shade=n).convert("L")
             for n in range(8)}
    MaskCache(tmp_path / "probe", ttl=100).put("00", product().convert("L"))
    bound = int(4.5 * (tmp_path / "probe" / "00" / "00.png").stat().st_size)
    cache = MaskCache(tmp_path / "c", ttl=100, max_bytes=bound, clock=clock)
    tmp_path = tmp_path / "c"
    for n, (key, mask) in enumerate(masks.items()):
        cache.put(key, mask)
        path = tmp_path / key[:2] / f"{key}.png"
        stamp = clock.now + n  # oldest first
        os.utime(path, (stamp, stamp))
    keys = list(masks)

    entries = list(tmp_path.glob("??/*.png"))
    assert sum(p.stat().st_size for p in entries) <= bound and len(entries) >= 3
    assert cache.get(keys[-1], (320, 240)) is not None  # the newest stayed
    assert cache.get(keys[0], (320, 240)) is None  # the oldest went
    assert not list(tmp_path.glob("??/.*"))  # no temp files left

    clock.now += 200  # past the TTL
    assert cache.get(keys[-1], (320, 240)) is None
    assert not (tmp_path / keys[-1][:2] / f"{keys[-1]}.png").exists()

    key = keys[1]
    (tmp_path / key[:2]).mkdir(exist_ok=True)
    (tmp_path / key[:2] / f"{key}.png").write_bytes(b"not a png")
    clock.now = os.stat(tmp_path / key[:2] / f"{key}.png").st_mtime
    assert cache.get(key, (320, 240)) is None  # a damaged entry is a miss, and is removed
    assert not (tmp_path / key[:2] / f"{key}.png").exists()


def test_the_cache_key_is_the_pixels_and_the_service() -> None:
    assert content_key(product(), "gradio", "a/png") == content_key(product(), "gradio", "a/png")
    assert content_key(product(), "gradio", "a/png") != content_key(product(), "gradio", "b/png")
    assert content_key(product(), "gradio", "a/png") != content_key(product(shade=1), "gradio",
                                                                    "a/png")
