"""A secret in ``GRADIO_API_URL`` leaves the process nowhere, in any form the client accepts.

Each form gets a secret of its own; the forms are batched three to a URL (one shape of userinfo
each, with query parameters), which keeps the daemon starts to three. gradio_client reaches the
server through every form: the userinfo becomes a Basic header, the query stays on the URL.

The daemon starts while its remote is down (a relay in front of the real Gradio server, still
closed), so the texts that carry the URL are produced: the outage on the console and in
``/health``; then the relay opens and the server refuses one photo, so that the URL reaches an
``.erro.txt``. Every place a value leaves the process is searched for every secret, as an
operator or a shop would see it: ``thumbgen config``, ``thumbgen diagnose`` and
``thumbgen backup config`` (output and manifest), the daemon's console and ``logs/app.log``,
``/health`` and ``/metrics`` over HTTP, and the note beside the refused photo. Each place but
two must show the URL's host, so the search is never over text that simply left the URL out.
"""

from __future__ import annotations

import secrets
import socket
import string
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import THUMBGEN, Daemon, wait_for
from tests.e2e.test_ops import base_url, get
from tests.e2e.test_remote import drop, remote_daemon
from tests.gradio_app import GradioServer, free_port

pytestmark = pytest.mark.e2e

# One URL per shape of userinfo; {form} stands for that form's secret.
BATCHES = {
    "user-password": "http://user:{user_password}@{host}/?token={token}&lang=pt&sig={sig}",
    "empty-user": "http://:{empty_user}@{host}/?key={key}&access_token={access_token}",
    "at-in-password": "http://user:p@{at_in_password}@{host}/?sv=2024&api_key={api_key}",
}
REFUSED_WIDTH = 333
# the places that never name the remote at all
SILENT_PLACES = ["/metrics", "thumbgen backup config"]


class Relay:
    """A TCP port on 127.0.0.1 that refuses connections until ``open()``, then passes every
    connection through to ``target``: a remote that is down and comes back, while the real
    server behind it keeps running."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = free_port()
        self._listener: socket.socket | None = None

    def open(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                return
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:  # one side is done: so is the connection
            src.close()
            dst.close()


@pytest.fixture
def relay(remote: GradioServer) -> Iterator[Relay]:
    r = Relay(remote.port)
    yield r
    r.close()


def _command(d: Daemon, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([THUMBGEN, *args], cwd=d.base, env=d.env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _output(proc: subprocess.Popen[str]) -> str:
    out, _ = proc.communicate(timeout=60)
    return out


def _around(text: str, secret: str, width: int = 60) -> str:
    at = text.index(secret)
    return repr(text[max(0, at - width):at + len(secret) + 20])


@pytest.mark.parametrize("batch", BATCHES)
def test_a_secret_in_the_gradio_url_is_masked_everywhere_it_could_leave(
        batch: str, make_daemon: Callable[..., Daemon], remote: GradioServer, relay: Relay,
        tree: Path) -> None:
    host = f"127.0.0.1:{relay.port}"
    template = BATCHES[batch]
    forms = [name for _, name, _, _ in string.Formatter().parse(template) if name not in
             (None, "host")]
    secret = {form: f"Zq{secrets.token_hex(8)}" for form in forms}
    remote.set(refuse_width=REFUSED_WIDTH)
    # one attempt, no fallback: the refusal, proven by a control photo, rejects the photo
    d = remote_daemon(make_daemon, template.format(host=host, **secret),
                      GRADIO_FALLBACK_ENABLED="false", GRADIO_RETRY_ATTEMPTS="1")
    # the operator's commands run while the daemon starts (and the remote is down)
    commands = {name: _command(d, *args) for name, args in
                {"thumbgen config": ("config",), "thumbgen diagnose": ("diagnose",),
                 "thumbgen backup config": ("backup", "config")}.items()}
    drop(d.inbox, "odd.jpg", width=REFUSED_WIDTH)
    d.start()
    d.wait_started()
    wait_for(lambda: "files wait in the inbox until it is back" in d.log(), 30,
             message=f"the daemon to find the remote down; log:\n{d.log()[-3000:]}")
    url = base_url(d)
    seen = {"/health, remote down": get(url + "/health")[1].decode()}
    relay.open()
    note = d.failed / "odd.jpg.erro.txt"
    wait_for(note.exists, 60, message=f"the refused photo's note; log:\n{d.log()[-3000:]}")
    seen |= {name: _output(proc) for name, proc in commands.items()}
    seen["/health"] = get(url + "/health")[1].decode()
    seen["/metrics"] = get(url + "/metrics")[1].decode()
    seen[".erro.txt"] = note.read_text()
    assert d.stop() == 0
    seen["console"] = d.log()
    seen["logs/app.log"] = (tree / "logs" / "app.log").read_text()
    manifests = sorted((tree / "backups").glob("config_*.manifest.jsonl"))
    assert len(manifests) == 1, seen["thumbgen backup config"]
    seen["backup manifest"] = manifests[0].read_text()

    leaks = [f"  {form} in {place}: {_around(text, value)}" for form, value in secret.items()
             for place, text in seen.items() if value in text]
    assert not leaks, f"secrets of {batch} shown:\n" + "\n".join(leaks)
    silent = sorted(place for place, text in seen.items() if host not in text)
    assert silent == SILENT_PLACES, silent
