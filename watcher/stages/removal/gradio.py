"""Remote background removal by a Gradio app (a Hugging Face Space or any URL), one attempt a call.

How the client really behaves (see NOTES.md): ``predict()`` has no timeout, so every call is
``submit()`` + ``result(timeout)``, and a call that runs out of time is cancelled, which frees its
place in the server's queue. Downloads by the client would leak folders into ``/tmp``, so the
client only reports where the result is, and we stream it into the daemon's own temp folder.
Every failure is turned into the ``remote`` contract's exceptions: what to do next is decided by
``resilient.RemoteRemover``.
"""

from __future__ import annotations

import os

# Telemetry off, before gradio_client and huggingface_hub read these at import time
# (the client's ``analytics_enabled=False`` argument alone does not stop it).
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

import concurrent.futures  # noqa: E402
import functools  # noqa: E402
import ssl  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import urllib.parse  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import httpx  # noqa: E402
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.client import Job  # noqa: E402
from gradio_client import utils as gradio_utils  # noqa: E402
from gradio_client.exceptions import AppError, ValidationError  # noqa: E402
from PIL import Image, UnidentifiedImageError  # noqa: E402

from watcher.config import Settings  # noqa: E402
from watcher.masking import mask_url  # noqa: E402
from watcher.metrics import Metrics  # noqa: E402
from watcher.stages.removal.breaker import CircuitBreaker  # noqa: E402
from watcher.stages.removal.cache import MaskCache  # noqa: E402
from watcher.stages.removal.local import LocalRemover  # noqa: E402
from watcher.stages.removal.pacing import Backoff, RateLimit  # noqa: E402
from watcher.stages.removal.remote import RefusedInput, RemoteError, TransientError  # noqa: E402
from watcher.stages.removal.resilient import RemoteRemover  # noqa: E402

_CONNECT_SECONDS = 10.0
# The client keeps one event stream open for all calls; the server heartbeats it every 15 s.
_STREAM_READ_SECONDS = 60.0
_MAX_RESULT_BYTES = 64 * 1024**2
_UPLOAD_QUALITY = 95  # JPEG, 4:4:4: a few ms to encode, and no visible loss for a mask
DEFAULT_MAX_SIDE = 2048  # the Space's model works at ~1024²: more is bytes on the wire
_ASPECT_TOLERANCE = 0.01
_RESULT_FORMATS = ["PNG", "WEBP", "TIFF", "GIF"]  # formats that carry transparency
_LOCAL_HOSTS = "127.0.0.1,localhost,::1"
BREAKER_THRESHOLD = 5  # failed attempts in a row
BREAKER_MAX_FIRST_COOLDOWN = 30.0


class GradioBackend:
    """One Gradio endpoint that turns a photo into a transparent PNG.

    ``src`` is a URL or a Space id (``owner/name``); ``api_name`` the endpoint (``/png`` on
    ``not-lain/background-removal``). The result may be a file path, a file dict with ``url``,
    or a pair whose first element is the cut-out. The photo goes out at most ``max_side``
    pixels on its longer side; its mask comes back stretched to the photo's size, and the
    pipeline's refine places its edges on the photo's own (``stages/refine.py``). One
    ``Client`` serves every thread: it is built on first use, and built again only if building
    failed (a built client survives a restart of the server). Temp files (upload and download)
    live in ``temp_dir`` and are gone when the call returns.
    """

    name = "gradio"

    def __init__(self, src: str, api_name: str = "/png", token: str = "", timeout: float = 60.0,
                 temp_dir: Path | None = None, max_workers: int = 40,
                 max_side: int = DEFAULT_MAX_SIDE) -> None:
        self.src = src
        self.api_name = api_name if api_name.startswith("/") else f"/{api_name}"
        self.shown = mask_url(src)  # src in every text: a password or token in it never shows
        self.endpoint = _endpoint(self.shown, self.api_name)
        self.timeout = timeout
        self.max_side = max_side
        self.temp_dir = Path(temp_dir) if temp_dir else Path(tempfile.gettempdir())
        self._token = token
        self._max_workers = max_workers
        self._lock = threading.Lock()
        self._client: Client | None = None
        self._http: httpx.Client | None = None
        self._jobs: set[Job] = set()  # in flight, cancelled by close()
        self._closed = False
        _bypass_proxy_for_local_hosts()

    # -- one call ------------------------------------------------------------------------------

    def cutout(self, image: Image.Image) -> Image.Image:
        """An ``L`` mask of ``image.size`` from the remote cut-out of ``image`` at most
        ``max_side`` on its longer side. Raises ``RemoteError``s."""
        client = self._get_client()
        sent = fit_within(image if image.mode == "RGB" else image.convert("RGB"), self.max_side)
        sent_size = sent.size
        with self._temp_file(".jpg") as upload:
            sent.save(upload, format="JPEG", quality=_UPLOAD_QUALITY, subsampling=0)
            del sent  # not needed while the call waits
            result = self._run(client, upload)
        with self._temp_file(".png") as download:
            self._download(client, _file_url(client, result), download)
            return _read_mask(download, sent_size, image.size)

    def _run(self, client: Client, upload: Path) -> Any:
        try:
            job = client.submit(handle_file(str(upload)), api_name=self.api_name)
        except ValueError as exc:  # unknown endpoint, wrong parameters: a configuration error
            raise RemoteError("config", f"{self.endpoint}: {exc}") from exc
        with self._lock:
            self._jobs.add(job)
        try:
            return job.result(timeout=self.timeout)
        except TimeoutError:
            job.cancel()  # frees the server's queue slot; result() must not be called again
            raise TransientError("timeout", f"no answer within {self.timeout:g} s") from None
        except Exception as exc:  # the client raises many, undocumented types: sort them here
            raise _classify(exc) from exc
        finally:
            with self._lock:
                self._jobs.discard(job)

    def _download(self, client: Client, url: str, dest: Path) -> None:
        # the token and cookies go only where they came from, never to a host the answer names
        same_origin = _origin(url) == _origin(client.src_prefixed)
        headers, cookies = (client.headers, client.cookies) if same_origin else ({}, {})
        try:
            with self._get_http().stream("GET", url, headers=headers,
                                         cookies=cookies) as response:
                if response.status_code == 429:
                    raise TransientError("rate_limited", "result download answered 429")
                if response.status_code >= 500:
                    raise TransientError("server_error",
                                         f"result download answered {response.status_code}")
                if response.status_code != 200:
                    raise RemoteError("bad_result",
                                      f"result download answered {response.status_code}")
                size = 0
                with open(dest, "wb") as fh:
                    for chunk in response.iter_bytes(256 * 1024):
                        size += len(chunk)
                        if size > _MAX_RESULT_BYTES:
                            raise RemoteError("bad_result", "the result is larger than "
                                              f"{_MAX_RESULT_BYTES // 1024**2} MiB")
                        fh.write(chunk)
        except httpx.HTTPError as exc:
            raise TransientError("unreachable", f"result download failed: {exc!r}") from exc

    # -- resources -----------------------------------------------------------------------------

    def _get_client(self) -> Client:
        client = self._client
        if client is not None:
            return client
        with self._lock:
            if self._closed:
                raise TransientError("closed", "the daemon is stopping")
            if self._client is None:
                self._client = self._build_client()
            return self._client

    def _build_client(self) -> Client:
        try:
            return Client(
                self.src,
                # False, not None: never send a locally saved Hugging Face token to this server
                token=self._token or False,  # type: ignore[arg-type]
                verbose=False,
                download_files=False,
                analytics_enabled=False,
                max_workers=self._max_workers,
                # The client makes a new httpx client for every request (2–3 per call), and
                # each loads the CA bundle (~50 ms of CPU) unless handed a ready SSL context.
                ssl_verify=_ssl_context(),  # type: ignore[arg-type]
                httpx_kwargs={"timeout": httpx.Timeout(max(_STREAM_READ_SECONDS, self.timeout),
                                                       connect=_CONNECT_SECONDS)},
            )
        except httpx.HTTPError as exc:
            raise TransientError("unreachable", f"cannot reach {self.shown}: {exc!r}") from exc
        except Exception as exc:  # a Space that is building, paused, private or unknown
            raise TransientError("unreachable", f"cannot load {self.shown}: {exc}") from exc

    def _get_http(self) -> httpx.Client:
        with self._lock:
            if self._http is None:
                self._http = httpx.Client(
                    timeout=httpx.Timeout(self.timeout, connect=_CONNECT_SECONDS),
                    follow_redirects=True, verify=_ssl_context())
            return self._http

    @contextmanager
    def _temp_file(self, suffix: str) -> Iterator[Path]:
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="gradio-", suffix=suffix, dir=self.temp_dir)
        os.close(fd)
        path = Path(name)
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)

    def close(self) -> None:
        """Cancel the calls in flight (their threads would otherwise hold the process open, and
        their places in the server's queue) and close the connections."""
        with self._lock:
            self._closed = True
            jobs, self._jobs = list(self._jobs), set()
            client, self._client = self._client, None
            http, self._http = self._http, None
        for job in jobs:
            job.cancel()
        if client is not None:
            client.close()
        if http is not None:
            http.close()


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One verifying SSL context (certifi, or SSL_CERT_FILE / SSL_CERT_DIR) for every request."""
    return httpx.create_ssl_context()


def _classify(exc: Exception) -> RemoteError:
    """The client's exception → what the remote contract says should happen next."""
    if isinstance(exc, (AppError, ValidationError)):
        return RefusedInput(str(exc) or type(exc).__name__)
    if isinstance(exc, concurrent.futures.CancelledError):
        return TransientError("interrupted", "the server went away during the call")
    if isinstance(exc, gradio_utils.QueueError):
        return TransientError("queue_full", "the server's queue is full")
    if isinstance(exc, gradio_utils.TooManyRequestsError):
        return TransientError("rate_limited", "the server asks for fewer requests (429)")
    if isinstance(exc, httpx.HTTPStatusError):
        code = exc.response.status_code
        if code == 429:
            return TransientError("rate_limited", "the server asks for fewer requests (429)")
        if code >= 500:
            return TransientError("server_error", f"the server answered {code}")
        return RemoteError("http_error", f"the server answered {code}: {exc}")
    if isinstance(exc, httpx.TimeoutException):
        return TransientError("timeout", f"network timeout: {exc!r}")
    if isinstance(exc, httpx.HTTPError):
        return TransientError("unreachable", f"network error: {exc!r}")
    if "429" in str(exc):  # a private Space's quota error arrives as a bare ValueError
        return TransientError("rate_limited", str(exc))
    return RemoteError("error", f"{type(exc).__name__}: {exc}")


def _file_url(client: Client, result: Any) -> str:
    """Where the cut-out is: a pair gives its first element; a file dict its ``url``."""
    while isinstance(result, (tuple, list)) and result:
        result = result[0]
    if isinstance(result, dict):
        url = result.get("url") or ""
        path = result.get("path") or ""
    elif isinstance(result, str):
        url, path = (result, "") if result.startswith(("http://", "https://")) else ("", result)
    else:
        raise RemoteError("bad_result", f"unexpected result {type(result).__name__}")
    if url:
        return url
    if path:  # a file on the server: served under the API prefix
        return urllib.parse.urljoin(client.src_prefixed, f"file={path}")
    raise RemoteError("bad_result", f"the result names no file: {result!r}")


def _endpoint(src: str, api_name: str) -> str:
    """``src`` with the API name at the end of its path, before any query:
    ``http://h/?k=v`` → ``http://h/png?k=v``."""
    cut = min((i for i in map(src.find, "?#") if i >= 0), default=len(src))
    return f"{src[:cut].rstrip('/')}{api_name}{src[cut:]}"


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme, (parts.hostname or ""), parts.port


def fit_within(image: Image.Image, max_side: int) -> Image.Image:
    """``image`` itself when neither side is over ``max_side``, else scaled down (Lanczos) so
    that its longer side is ``max_side``."""
    longest = max(image.size)
    if longest <= max_side:
        return image
    scale = max_side / longest
    size = (max(1, min(max_side, round(image.width * scale))),
            max(1, min(max_side, round(image.height * scale))))
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)


def _read_mask(path: Path, sent: tuple[int, int], size: tuple[int, int]) -> Image.Image:
    """The alpha of the returned image, checked against the ``sent`` photo's shape and
    stretched to ``size``, the photo's own (refine then puts its edges on the photo's)."""
    width, height = sent
    try:
        with Image.open(path, formats=_RESULT_FORMATS) as im:
            if im.width * im.height > 4 * width * height + 1_000_000:
                raise RemoteError("bad_result", f"the result is {im.width}×{im.height}, far "
                                  f"larger than the {width}×{height} photo sent")
            im.load()
            has_alpha = im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
            if not has_alpha:
                raise RemoteError("bad_result", f"the result has no transparency ({im.mode})")
            alpha = im.convert("RGBA").getchannel("A")
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError,
            Image.DecompressionBombError) as exc:
        raise RemoteError("bad_result", f"the result is not a readable image: {exc}") from exc
    expected_height = alpha.width * height / width
    if abs(alpha.height - expected_height) > max(1.0, _ASPECT_TOLERANCE * expected_height):
        raise RemoteError("bad_result", f"the result is {alpha.width}×{alpha.height}, not the "
                          f"shape of the {width}×{height} photo sent")
    if alpha.size != size:
        alpha = alpha.resize(size, Image.Resampling.BILINEAR)
    return alpha


def _bypass_proxy_for_local_hosts() -> None:
    """A proxy in the environment must not intercept a Gradio app on this machine."""
    if not any(os.environ.get(k) for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy",
                                          "https_proxy", "ALL_PROXY", "all_proxy")):
        return
    current = os.environ.get("NO_PROXY") or os.environ.get("no_proxy") or ""
    merged = ",".join(filter(None, [current, _LOCAL_HOSTS]))
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = merged


def build(settings: Settings, metrics: Metrics,
          cpu_slots: threading.Semaphore | None = None) -> RemoteRemover:
    """The Gradio remover as the settings describe it; ``cpu_slots`` is the pipeline's CPU
    semaphore, taken by the local fallback."""
    state = settings.state_path
    remote = GradioBackend(settings.gradio_api_url, settings.gradio_api_name,
                           settings.gradio_token, settings.gradio_timeout, temp_dir=state / "tmp",
                           max_workers=max(40, 2 * settings.max_concurrent_requests),
                           max_side=settings.remote_max_side)
    # Waiting files come back once per rescan, so probing a failed remote more often than that
    # gains nothing; capped so that the remote is back within half a minute however rare rescans,
    # and within two minutes (four cool-downs) however long the outage was.
    cooldown = min(BREAKER_MAX_FIRST_COOLDOWN, max(1.0, settings.rescan_interval))
    return RemoteRemover(
        remote, metrics,
        max_in_flight=settings.max_concurrent_requests,
        backoff=Backoff(attempts=settings.gradio_retry_attempts),
        breaker=CircuitBreaker(threshold=BREAKER_THRESHOLD, cooldown=cooldown,
                               max_cooldown=4 * cooldown),
        rate_limit=RateLimit(settings.rate_limit_per_minute),
        cache=MaskCache(state / "cache", settings.cache_ttl) if settings.cache_enabled else None,
        fallback=(LocalRemover(settings.model_path, threads=settings.cpu_workers,
                               runtime_setting=settings.local_runtime,
                               on_load=lambda c: metrics.set_runtime(c.runtime, c.precision))
                  if settings.gradio_fallback_enabled else None),
        cpu_slots=cpu_slots,
    )
