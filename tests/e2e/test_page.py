"""The shop's page on the real daemon: real HTTP, real multipart uploads, real files.

One daemon serves the module (its start loads the model); each test leaves the tree as it found
it apart from the photos it adds. Browser tests are in ``test_page_browser.py``.
"""

from __future__ import annotations

import http.client
import io
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.e2e.conftest import Daemon, daemon_env, wait_for
from tests.e2e.test_ops import base_url

pytestmark = pytest.mark.e2e
DATA = Path(__file__).resolve().parent.parent / "data"
PHOTO = DATA / "products" / "mugs.jpg"


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[Daemon]:
    base = tmp_path_factory.mktemp("shop")
    for folder in ("produtos/loja-a", "backgrounds", "thumbnails-prontas"):
        (base / folder).mkdir(parents=True)
    shutil.copyfile(DATA / "products" / "books.jpg", base / "produtos/loja-a/books.jpg")
    (base / "produtos" / "lista.jpg").write_bytes(b"uma lista de compras, nada de foto\n")
    d = Daemon(base, daemon_env(base), "shop")
    d.start(OUTPUT_SIZE=400, MAX_FILE_SIZE=2 * 1024**2)
    d.wait_started()
    d.wait_idle(2)
    yield d
    d.stop()


@pytest.fixture(scope="module")
def web(shop: Daemon) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url(shop), timeout=30, trust_env=False) as client:
        yield client


def token(web: httpx.Client) -> str:
    match = re.search(r'name="thumbgen-token" content="([^"]+)"', web.get("/").text)
    assert match
    return match.group(1)


def test_the_page_shows_counts_gallery_and_failures_in_portuguese(web: httpx.Client) -> None:
    answer = web.get("/")
    html = answer.text

    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert '<html lang="pt-BR">' in html
    for words in ("Aguardando", "Prontas hoje", "Falharam hoje", "neste computador",
                  "Últimas miniaturas", "Tentar de novo"):
        assert words in html, words
    assert "/previa/saida/loja-a/books.jpg" in html  # its thumbnail
    assert "/previa/entrada/_processados/loja-a/books.jpg" in html  # beside its original
    assert "O arquivo não é uma foto em um formato aceito" in html
    assert "Salve a imagem em um dos formatos aceitos" in html
    assert 'value="lista.jpg"' in html  # its Tentar de novo
    # the endpoint list is still there for tools
    assert web.get("/api").json()["endpoints"] == ["/health", "/livez", "/metrics", "/readyz"]
    assert "endpoints" in web.get("/", headers={"Accept": "application/json"}).json()


def test_images_are_served_by_their_content_and_previews_are_redrawn(web: httpx.Client) -> None:
    full = web.get("/miniatura/loja-a/books.jpg")
    preview = web.get("/previa/entrada/_processados/loja-a/books.jpg")

    assert full.headers["content-type"] == "image/jpeg"
    assert full.headers["x-content-type-options"] == "nosniff"
    assert Image.open(io.BytesIO(full.content)).size == (400, 400)
    assert preview.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(preview.content)).size) <= 320
    assert preview.content != (DATA / "products" / "books.jpg").read_bytes()[:len(preview.content)]
    none = web.get("/previa/entrada/_falhas/lista.jpg")  # no photo: no preview, a drawn box
    assert none.status_code == 404 and none.headers["content-type"] == "image/svg+xml"
    assert "sem prévia" in none.text


@pytest.mark.parametrize("path", [
    "/miniatura/../produtos/_falhas/lista.jpg",
    "/miniatura/%2e%2e/produtos/_falhas/lista.jpg",
    "/miniatura/%2E%2E%2Fprodutos%2F_falhas%2Flista.jpg",
    "/miniatura//etc/passwd",
    "/miniatura/%2Fetc%2Fpasswd",
    "/previa/entrada/%2e%2e/%2e%2e/etc/hostname",
    "/previa/entrada/.thumbgen/http.json",
    "/miniatura/loja-a/books.jpg%00.png",
    "/miniatura/loja-a/books%0a.jpg",
    "/miniatura/loja-a%5cbooks.jpg",
    "/previa/saida/link.jpg",
    "/miniatura/link.jpg",
    "/miniatura/linked/books.jpg",
    "/previa/entrada/_falhas/fora.jpg",
])
def test_nothing_outside_the_three_folders_is_served(shop: Daemon, web: httpx.Client,
                                                     path: str) -> None:
    outside = shop.base / "segredo.jpg"
    shutil.copyfile(PHOTO, outside)
    for link, target in ((shop.output / "link.jpg", outside),
                         (shop.output / "linked", shop.output / "loja-a"),
                         (shop.failed / "fora.jpg", outside)):
        if not link.is_symlink():
            link.symlink_to(target)

    # sent as written: an HTTP library would tidy the dots away before the daemon saw them
    connection = http.client.HTTPConnection(web.base_url.host, web.base_url.port, timeout=10)
    connection.request("GET", path)
    answer = connection.getresponse()
    body = answer.read()
    connection.close()

    assert answer.status in (400, 404), (path, answer.status)
    assert body[:3] != b"\xff\xd8\xff" and b"root:" not in body


def test_tentar_de_novo_moves_the_file_back_and_shows_it_waiting(shop: Daemon,
                                                                web: httpx.Client) -> None:
    shop.failed.joinpath("loja-c").mkdir()
    (shop.failed / "loja-c" / "caneca.jpg").write_bytes(PHOTO.read_bytes())
    (shop.failed / "loja-c" / "caneca.jpg.erro.txt").write_text("x\ny\n\nkind: damaged\n")

    answer = web.post("/tentar", data={"csrf": token(web), "arquivo": "loja-c/caneca.jpg"})

    assert answer.status_code == 303 and "acompanhar=" in answer.headers["location"]
    assert not (shop.failed / "loja-c" / "caneca.jpg").exists()
    assert not (shop.failed / "loja-c" / "caneca.jpg.erro.txt").exists()
    page = web.get(answer.headers["location"]).text
    assert "loja-c/caneca.jpg" in page and "aguarda para ser processada de novo" in page
    wait_for(lambda: "state state_done" in web.get(answer.headers["location"]).text, 60,
             message="the retried photo shown done")
    assert (shop.output / "loja-c" / "caneca.jpg").exists()
    gone = web.post("/tentar", data={"csrf": token(web), "arquivo": "loja-c/caneca.jpg"})
    assert gone.status_code == 404 and "não está mais entre as fotos que falharam" in gone.text


def test_a_post_without_the_page_token_or_from_another_site_changes_nothing(
        shop: Daemon, web: httpx.Client) -> None:
    (shop.failed / "fica.jpg").write_bytes(b"stays")
    (shop.failed / "fica.jpg.erro.txt").write_text("x\ny\n")

    no_token = web.post("/tentar", data={"arquivo": "fica.jpg"})
    other_site = web.post("/tentar", data={"csrf": token(web), "arquivo": "fica.jpg"},
                          headers={"Origin": "http://evil.example"})
    upload = web.post("/enviar", files={"fotos": ("x.jpg", PHOTO.read_bytes(), "image/jpeg")})

    assert (no_token.status_code, other_site.status_code, upload.status_code) == (403, 403, 400)
    assert "A página estava desatualizada" in no_token.text
    assert "não veio desta página" in other_site.text
    assert (shop.failed / "fica.jpg").exists() and not (shop.inbox / "x.jpg").exists()
    assert not list((shop.inbox / ".thumbgen" / "uploads").iterdir())


def test_uploads_land_whole_and_bad_files_are_refused_at_once(shop: Daemon,
                                                              web: httpx.Client) -> None:
    big = io.BytesIO()
    Image.effect_noise((1500, 1500), 80).convert("RGB").save(big, "PNG")  # > MAX_FILE_SIZE
    files = [("fotos", ("caneca.jpg", PHOTO.read_bytes(), "image/jpeg")),
             ("fotos", ("livros.jpg", (DATA / "products" / "books.jpg").read_bytes(),
                        "image/jpeg")),
             ("fotos", ("pagina.jpg", b"<html><script>alert(1)</script></html>", "image/jpeg")),
             ("fotos", ("enorme.png", big.getvalue(), "image/png"))]

    answer = web.post("/enviar", data={"csrf": token(web), "pasta": "loja-nova"}, files=files)

    assert answer.status_code == 303
    page = web.get(answer.headers["location"]).text
    assert "2 foto(s) enviada(s)" in page
    assert "pagina.jpg não foi enviada: não é uma foto JPEG, PNG ou WebP." in page
    assert "enorme.png não foi enviada: tem mais de 2 MB." in page
    assert not list((shop.inbox / ".thumbgen" / "uploads").iterdir())
    assert not any(p.name in ("pagina.jpg", "enorme.png") for p in shop.inbox.rglob("*"))
    wait_for(lambda: web.get(answer.headers["location"]).text.count("state state_done") == 2,
             60, message="the uploaded photos shown done")
    assert (shop.output / "loja-nova" / "caneca.jpg").exists()
    assert (shop.processed / "loja-nova" / "caneca.jpg").read_bytes() == PHOTO.read_bytes()


def test_a_damaged_upload_fails_at_once_not_after_the_unfinished_upload_grace(
        shop: Daemon, web: httpx.Client) -> None:
    # a file copied into the share may still be arriving, so a cut-short one is given a grace
    # (20 × SETTLE_SECONDS) before it fails; the page's uploads are renamed in only once whole,
    # so one that does not decode is damaged and says so without waiting
    half = PHOTO.read_bytes()[: PHOTO.stat().st_size // 2]
    answer = web.post("/enviar", data={"csrf": token(web), "pasta": "loja-meia"},
                      files=[("fotos", ("meia.jpg", half, "image/jpeg"))])
    assert answer.status_code == 303

    note = shop.failed / "loja-meia" / "meia.jpg.erro.txt"
    wait_for(note.exists, 30, message="the half photo in _falhas/ with its note")
    assert (shop.failed / "loja-meia" / "meia.jpg").read_bytes() == half
    assert "kind: incomplete" in note.read_text()
    held = [line for line in shop.log().splitlines()
            if "meia.jpg" in line and "may still be uploading" in line]
    assert held == []  # rejected on its first look, never put back to wait


def test_probes_answer_while_an_upload_trickles(web: httpx.Client) -> None:
    host, port = web.base_url.host, web.base_url.port
    sock = socket.create_connection((host, port))
    head = (f"POST /enviar HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: multipart/form-data; "
            f"boundary=b\r\nContent-Length: 900000\r\n\r\n--b\r\n").encode()
    sock.sendall(head)
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(0.2):
            try:
                sock.sendall(b"x")
            except OSError:
                return
    threading.Thread(target=trickle, daemon=True).start()
    try:
        time.sleep(0.5)
        for path in ("/livez", "/readyz", "/health", "/metrics"):
            assert web.get(path).status_code == 200, path
    finally:
        stop.set()
        sock.close()


def test_off_loopback_the_page_is_read_only_without_ui_token(tmp_path: Path,
                                                             model_path: Path) -> None:
    for folder in ("produtos", "backgrounds", "thumbnails-prontas"):
        (tmp_path / folder).mkdir()
    (tmp_path / "produtos" / "_falhas").mkdir()
    (tmp_path / "produtos" / "_falhas" / "a.jpg").write_bytes(b"x")
    (tmp_path / "produtos" / "_falhas" / "a.jpg.erro.txt").write_text("x\ny\n")
    open_daemon = Daemon(tmp_path, daemon_env(tmp_path), "open")
    open_daemon.start(HTTP_HOST="0.0.0.0")
    try:
        open_daemon.wait_started()
        with httpx.Client(base_url=base_url(open_daemon), timeout=10, trust_env=False) as client:
            html = client.get("/").text
            notice = ("Esta página é só para consulta. Para enviar fotos e tentar de novo, peça o "
                      "código de acesso a quem cuida do servidor.")
            assert notice in html and "Tentar de novo" not in html
            refused = client.post("/tentar", data={"csrf": token(client), "arquivo": "a.jpg"})
            assert refused.status_code == 403
            assert notice in refused.text
            assert (tmp_path / "produtos" / "_falhas" / "a.jpg").exists()
    finally:
        open_daemon.stop()

    locked = Daemon(tmp_path, daemon_env(tmp_path), "locked")
    locked.start(HTTP_HOST="0.0.0.0", UI_TOKEN="codigo-da-loja-42", LANGUAGE="en")
    try:
        locked.wait_started()
        with httpx.Client(base_url=base_url(locked), timeout=10, trust_env=False) as client:
            assert "Access code" in client.get("/").text
            wrong = client.post("/entrar", data={"csrf": token(client), "codigo": "nope"})
            assert wrong.status_code == 403 and "not right" in wrong.text
            login = client.post("/entrar", data={"csrf": token(client),
                                                 "codigo": "codigo-da-loja-42"})
            assert login.status_code == 303 and "codigo-da-loja-42" not in str(login.headers)
            assert "Try again" in client.get("/").text  # the cookie lets this browser write
            retried = client.post("/tentar", data={"csrf": token(client), "arquivo": "a.jpg"})
            assert retried.status_code == 303
        assert "codigo-da-loja-42" not in locked.log()
    finally:
        locked.stop()
