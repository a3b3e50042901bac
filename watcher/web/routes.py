"""The page's requests. GET: ``/`` (the page), ``/parte`` (its live part, for the script),
``/static/…``, ``/miniatura/<rel>`` (a thumbnail as made), ``/previa/saida|entrada/<rel>`` (a
preview). POST, each with the page token: ``/enviar`` (upload), ``/tentar`` (**Tentar de novo**),
``/entrar`` (the access code). A POST answers 303 to the page, which shows what happened, so
every form works without JavaScript."""

from __future__ import annotations

import html
import time
from collections.abc import Mapping
from http import HTTPStatus
from importlib import resources
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from loguru import logger
from python_multipart.multipart import MultipartParseError

from watcher import messages
from watcher.httpserver import RequestError
from watcher.web import upload, view
from watcher.web.files import Refused, image_type, read_inside, safe_rel
from watcher.web.track import Batch

if TYPE_CHECKING:
    from watcher.httpserver import BoundedHandler
    from watcher.web import Page

_STATIC = {"page.css": "text/css; charset=utf-8", "page.js": "text/javascript; charset=utf-8"}
_SECURITY = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
             "X-Frame-Options": "DENY",
             "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'self'; "
             "script-src 'self'; connect-src 'self'; form-action 'self'; "
             "frame-ancestors 'none'; base-uri 'none'"}
MAX_THUMBNAIL_BYTES = 64 * 1024**2
FORM_MAX_BYTES = 16 * 1024
_PART_OVERHEAD = 16 * 1024  # a part's headers and boundary, generously


def send(handler: BoundedHandler, status: int, body: bytes, content_type: str,
         headers: Mapping[str, str] | None = None, cache: str = "no-store") -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.send_header("Cache-Control", cache)
    for name, value in {**_SECURITY, **(headers or {})}.items():
        handler.send_header(name, value)
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)


def redirect(handler: BoundedHandler, where: str, headers: Mapping[str, str] | None = None) -> None:
    send(handler, 303, b"", "text/plain", {"Location": where, **(headers or {})})


def handle(page: Page, handler: BoundedHandler) -> None:
    address = urlsplit(handler.path)
    path = address.path
    query = parse_qs(address.query, max_num_fields=10)
    try:
        if handler.command in ("GET", "HEAD"):
            _get(page, handler, path, query)
        elif handler.command == "POST":
            _post(page, handler, path)
        else:
            send(handler, 405, b"method not allowed\n", "text/plain")
    except Refused as exc:
        logger.debug("shop's page refused {}: {}", path[:200], exc)
        send(handler, 404, b"not found\n", "text/plain")
    except (FileNotFoundError, NotADirectoryError):
        send(handler, 404, b"not found\n", "text/plain")


def _get(page: Page, handler: BoundedHandler, path: str, query: dict[str, list[str]]) -> None:
    headers = dict(handler.headers.items())
    if path == "/":
        html = _render(page, "page.html", view.Query.parse(query), headers)
        send(handler, 200, html.encode(), "text/html; charset=utf-8")
    elif path == "/parte":
        html = _render(page, "live.html", view.Query.parse(query), headers,
                       token=query.get("t", [""])[0])
        send(handler, 200, html.encode(), "text/html; charset=utf-8")
    elif path.startswith("/static/") and path[len("/static/"):] in _STATIC:
        name = path[len("/static/"):]
        body = (resources.files(__package__) / "static" / name).read_bytes()
        send(handler, 200, body, _STATIC[name], cache="no-cache")
    elif path.startswith("/miniatura/"):
        rel = _rel(path, "/miniatura/")
        data, _ = read_inside(page.app.settings.output_path, rel, MAX_THUMBNAIL_BYTES)
        content_type = image_type(data)
        if content_type is None:
            raise Refused(f"{rel} is not an image")
        send(handler, 200, data, content_type, cache="private, max-age=60")
    elif path.startswith(("/previa/saida/", "/previa/entrada/")):
        area, _, rest = path[len("/previa/"):].partition("/")
        root = page.app.settings.output_path if area == "saida" else page.app.settings.upload_path
        rel = _rel("/" + rest, "/")
        try:
            preview = page.previews.get(root, rel)
        except TimeoutError:
            send(handler, 503, b"busy\n", "text/plain", {"Retry-After": "1"})
            return
        if preview is None:  # not a photo: a drawn "no preview" box (no broken-image icon)
            send(handler, 404, _no_preview(page.app.settings.language), "image/svg+xml",
                 cache="private, max-age=60")
        else:
            send(handler, 200, preview, "image/jpeg", cache="private, max-age=60")
    else:
        send(handler, 404, b"not found\n", "text/plain")


def _no_preview(language: str) -> bytes:
    """The same dashed "sem prévia" box the gallery draws, as an image: browsers show an image
    answer even under a 404, where a text one became the broken-image icon."""
    text = html.escape(messages.text(language, "page.no_preview"))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="160" height="120" '
            f'viewBox="0 0 160 120"><rect x="1" y="1" width="158" height="118" rx="6" '
            f'fill="#fafafa" stroke="#bbb" stroke-width="2" stroke-dasharray="6 4"/>'
            f'<text x="80" y="66" font-family="sans-serif" font-size="14" fill="#777" '
            f'text-anchor="middle">{text}</text></svg>').encode()


def _rel(path: str, prefix: str) -> PurePosixPath:
    """The file named after ``prefix``, percent-decoded once, checked by ``safe_rel``."""
    try:
        text = unquote(path[len(prefix):], errors="strict")
    except UnicodeDecodeError:
        raise Refused("a name that is not UTF-8") from None
    return safe_rel(text)


def _render(page: Page, template: str, query: view.Query, headers: dict[str, str],
            token: str = "", notices: list[tuple[str, dict[str, Any]]] | None = None) -> str:
    if not page.guard.token_ok(token):
        token = page.guard.page_token()
    data = view.context(page, query, headers, token, notices or [])
    return page.templates.get_template(template).render(data)


# -- writing --------------------------------------------------------------------------------------

def _post(page: Page, handler: BoundedHandler, path: str) -> None:
    headers = dict(handler.headers.items())
    if not page.guard.same_origin(headers):
        return _refuse(page, handler, 403, "refused_cross_site")
    if path == "/entrar":
        return _login(page, handler)
    if path not in ("/enviar", "/tentar"):
        return send(handler, 404, b"not found\n", "text/plain")
    if not page.guard.may_write(headers):
        key = "read_only" if page.guard.read_only else "token_wrong"
        return _refuse(page, handler, 403, key)
    if path == "/tentar":
        return _retry(page, handler)
    return _upload(page, handler)


def _refuse(page: Page, handler: BoundedHandler, status: int, key: str,
            **fields: Any) -> None:
    """The page again, with why nothing was done on top; the rest of the body is dropped."""
    html = _render(page, "page.html", view.Query(), dict(handler.headers.items()),
                   notices=[(key, fields)])
    send(handler, status, html.encode(), "text/html; charset=utf-8")
    handler._discard_rest()


def _form(handler: BoundedHandler) -> dict[str, str]:
    body = handler.read_body(FORM_MAX_BYTES)
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"),
                                         max_num_fields=10).items()}


def _login(page: Page, handler: BoundedHandler) -> None:
    form = _form(handler)
    if not page.guard.token_ok(form.get("csrf", "")):
        return _refuse(page, handler, 403, "refused_stale")
    if not page.guard.right_code(form.get("codigo", "")):
        return _refuse(page, handler, 403, "token_wrong")
    redirect(handler, "/", {"Set-Cookie": page.guard.cookie()})


def _retry(page: Page, handler: BoundedHandler) -> None:
    form = _form(handler)
    if not page.guard.token_ok(form.get("csrf", "")):
        return _refuse(page, handler, 403, "refused_stale")
    name = form.get("arquivo", "")
    when = time.time()
    try:
        placed = page.failures.retry(safe_rel(name))
    except (Refused, FileNotFoundError):
        return _refuse(page, handler, 404, "retry_gone", file=name[-80:])
    # its bytes sat whole in _falhas/: if they still do not decode, they fail again at once
    page.app.pipeline.known_whole(placed, page.app.settings.upload_path.joinpath(*placed.parts))
    logger.bind(file=str(placed)).info("the shop sent {} back to the inbox as {}", name, placed)
    key = page.tracker.add(Batch([placed], [("retried", {"file": placed.name})], when))
    redirect(handler, view.Query(batch=key).link() + "#acompanhar")


def _upload(page: Page, handler: BoundedHandler) -> None:
    s = page.app.settings
    kind, _, params = handler.headers.get("Content-Type", "").partition(";")
    boundary = next((v.strip().strip('"') for k, _, v in
                     (p.strip().partition("=") for p in params.split(";"))
                     if k.strip().lower() == "boundary"), "")
    if kind.strip().lower() != "multipart/form-data" or not boundary:
        raise RequestError(HTTPStatus.BAD_REQUEST, "multipart/form-data expected")
    cap = page.max_files * (s.max_file_size + _PART_OVERHEAD) + _PART_OVERHEAD
    if int(handler.headers.get("Content-Length", "0") or 0) > cap:
        return _refuse(page, handler, 413, "refused_total")
    if not page.uploads.acquire(blocking=False):
        return _refuse(page, handler, 503, "refused_busy")
    try:
        _receive(page, handler, boundary.encode("latin-1"), cap)
    finally:
        page.uploads.release()


def _receive(page: Page, handler: BoundedHandler, boundary: bytes, cap: int) -> None:
    s = page.app.settings
    when = time.time()
    receiver = upload.Receiver(boundary, page.upload_dir, max_file_bytes=s.max_file_size,
                               max_files=page.max_files, formats=s.allowed_formats,
                               token_ok=page.guard.token_ok)
    try:
        for chunk in handler.body_chunks(cap):
            receiver.feed(chunk)
        receiver.finish()
        folder = upload.shop_folder(receiver.fields.get("pasta", ""))
        placed = upload.publish(receiver.accepted, s.upload_path, folder)
    except upload.Abort as exc:
        receiver.discard()
        return _refuse(page, handler, 400, exc.message[0], **exc.message[1])
    except Refused:
        receiver.discard()
        return _refuse(page, handler, 400, "refused_folder")
    except MultipartParseError as exc:
        receiver.discard()
        raise RequestError(HTTPStatus.BAD_REQUEST, f"not a multipart body: {exc}") from None
    except Exception:
        receiver.discard()
        raise
    if not placed and not receiver.refused:
        return _refuse(page, handler, 400, "refused_none")
    for rel in placed:  # whole: one that does not decode is damaged, not still arriving
        page.app.pipeline.known_whole(rel, s.upload_path.joinpath(*rel.parts))
    if placed:
        logger.info("the shop sent {} photo(s) into {}", len(placed), s.upload_path / folder)
    notices = ([("sent", {"count": len(placed)})] if placed else []) + receiver.refused
    key = page.tracker.add(Batch(placed, notices, when))
    redirect(handler, view.Query(batch=key).link() + "#acompanhar")


__all__ = ["handle", "send"]
