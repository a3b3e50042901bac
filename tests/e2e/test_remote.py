"""The daemon with remote removal, end to end: a real ``thumbgen run`` against a real Gradio server.

The tests act as users (drop photos, wait for thumbnails, send SIGTERM) and read the server's
own counters to know whether the remote made the cut-outs.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from tests.e2e.conftest import Daemon, visible_files, wait_for
from tests.gradio_app import GradioServer, free_port

pytestmark = pytest.mark.e2e

REFUSED_FIRST_LINE = "O serviço de remoção de fundo não consegue ler esta foto"  # pt-BR


def drop(inbox: Path, name: str, shade: int = 0, width: int = 400) -> Path:
    """A product photo (a red box on white), copied in as a user's file manager would."""
    height = width * 3 // 4
    image = Image.new("RGB", (width, height), (255, 255, 255 - shade % 200))
    image.paste((200, 30 + shade % 200, 30 + shade // 200),
                (width // 4, height // 4, 3 * width // 4, 3 * height // 4))
    path = inbox / name
    tmp = inbox / f".{name}.part"
    image.save(tmp, format="JPEG", quality=92)
    os.replace(tmp, path)
    return path


def done_via(log: str, backend: str) -> int:
    return len(re.findall(rf"\bdone \S+ in \d+ ms \(.*\) via {re.escape(backend)}\b", log))


def remote_daemon(make_daemon: Callable[..., Daemon], url: str, **overrides: str) -> Daemon:
    settings = {"REMOVAL_BACKEND": "gradio", "GRADIO_API_URL": url, "GRADIO_TIMEOUT": "10",
                "GRADIO_RETRY_ATTEMPTS": "2", "RESCAN_INTERVAL": "1", **overrides}
    return make_daemon(**settings)


def test_thumbnails_come_from_the_remote_at_most_n_at_once_and_leave_no_temp_files(
        make_daemon: Callable[..., Daemon], remote: GradioServer, tree: Path) -> None:
    remote.set(delay=0.25)
    d = remote_daemon(make_daemon, remote.url, MAX_CONCURRENT_REQUESTS="3")
    system_tmp = tree / "system-tmp"  # the daemon's /tmp: it must stay empty
    system_tmp.mkdir()
    d.env["TMPDIR"] = str(system_tmp)
    d.start()
    d.wait_started()
    for n in range(50):
        drop(d.inbox, f"photo-{n:02}.jpg", shade=n)

    d.wait_idle(50, timeout=120)

    stats = remote.stats()
    # Every thumbnail came from a /png call, at most 3 at once. Under load gradio_client now and
    # then reports a call as dropped ("the server went away") while the server still runs it; the
    # daemon retries, so each such logged attempt may add one call and one to the server's peak.
    retried = d.log().count("remote attempt failed")
    assert set(stats["calls"]) == {"png"} and 50 <= stats["calls"]["png"] <= 50 + retried
    assert 3 <= stats["peak"] <= 3 + retried
    assert len(d.thumbnails()) == 50 and not visible_files(d.failed)
    assert done_via(d.log(), "gradio") == 50
    # the daemon points TMPDIR at .thumbgen/tmp: nothing at all lands in the system's /tmp
    assert list(system_tmp.iterdir()) == []
    # and the 50 downloads left nothing there either (onnxruntime's import writes .ses into the
    # daemon's own TMPDIR, .thumbgen/tmp/<worker-id>/, removed at a clean stop)
    left = list((d.inbox / ".thumbgen" / "tmp").iterdir())
    assert len(left) == 1 and left[0].is_dir() and {p.name for p in left[0].iterdir()} <= {".ses"}

    # the same photo dropped again under another name: the cache answers, not the remote
    calls = remote.calls()
    drop(d.inbox, "photo-07-again.jpg", shade=7)
    d.wait_idle(51)
    assert remote.calls() == calls and done_via(d.log(), "gradio-cache") == 1
    assert (d.output / "photo-07-again.jpg").is_file()
    assert d.stop() == 0
    assert list((d.inbox / ".thumbgen" / "tmp").iterdir()) == []  # a clean stop leaves nothing


def test_remote_down_at_start_files_go_to_the_local_model(
        make_daemon: Callable[..., Daemon]) -> None:
    d = remote_daemon(make_daemon, f"http://127.0.0.1:{free_port()}/")  # fallback is on
    for n in range(3):
        drop(d.inbox, f"photo-{n}.jpg", shade=n)
    d.start()
    d.wait_started()

    d.wait_idle(3)

    log = d.log()
    assert len(d.thumbnails()) == 3 and not visible_files(d.failed)
    assert done_via(log, "local") == 3
    assert log.count("the local model makes the cut-outs until it is back") == 1
    assert d.stop() == 0


def test_without_fallback_files_wait_while_the_remote_is_down_and_finish_when_it_starts(
        make_daemon: Callable[..., Daemon], tmp_path: Path) -> None:
    server = GradioServer(tmp_path / "server")  # not started: the Space is down
    d = remote_daemon(make_daemon, server.url, GRADIO_FALLBACK_ENABLED="false")
    for n in range(3):
        drop(d.inbox, f"photo-{n}.jpg", shade=n)
    d.start()
    d.wait_started()
    try:
        wait_for(lambda: "files wait in the inbox until it is back" in d.log(), 20,
                 message="the daemon to find the remote down")
        server.launch()  # while it starts, the files keep waiting: nothing is rejected
        assert not visible_files(d.failed) and not d.thumbnails()
        server.wait_ready()
        d.wait_idle(3, timeout=90)  # a file sent back to wait is held a while by the daemon
    finally:
        server.stop()

    assert server.calls() == 3 and len(d.thumbnails()) == 3 and not visible_files(d.failed)
    assert done_via(d.log(), "gradio") == 3
    assert d.stop() == 0


def test_an_unreadable_photo_is_rejected_with_a_plain_reason_the_others_are_done(
        make_daemon: Callable[..., Daemon], remote: GradioServer) -> None:
    remote.set(refuse_width=333)
    # one attempt: refused once, and a control photo served, is proof enough (the remover's
    # tests cover refusals over several attempts, which take trips through the inbox)
    d = remote_daemon(make_daemon, remote.url, GRADIO_FALLBACK_ENABLED="false",
                      GRADIO_RETRY_ATTEMPTS="1")
    drop(d.inbox, "odd.jpg", width=333)
    for n in range(2):
        drop(d.inbox, f"fine-{n}.jpg", shade=n)
    d.start()
    d.wait_started()

    d.wait_idle(3)

    assert sorted(p.name for p in d.thumbnails()) == ["fine-0.jpg", "fine-1.jpg"]
    note = d.failed / "odd.jpg.erro.txt"
    wait_for(note.exists, 10, message="the reason beside the rejected photo")  # written after it
    reason = note.read_text()
    assert reason.splitlines()[0].startswith(REFUSED_FIRST_LINE)
    assert "remove" in reason
    assert d.stop() == 0


def test_sigterm_while_the_remote_hangs_returns_the_file_and_exits_0(
        make_daemon: Callable[..., Daemon], remote: GradioServer) -> None:
    remote.set(hang_calls=1)
    d = remote_daemon(make_daemon, remote.url, GRADIO_TIMEOUT="60", SHUTDOWN_TIMEOUT="2")
    photo = drop(d.inbox, "stuck.jpg")
    original = photo.read_bytes()
    d.start()
    d.wait_started()
    wait_for(lambda: remote.stats()["active"] == 1, 20, message="the call to hang")

    start = time.monotonic()
    assert d.stop(signal.SIGTERM, timeout=30) == 0
    assert time.monotonic() - start < 10
    assert photo.read_bytes() == original  # back in the inbox, unchanged
    assert not d.thumbnails() and not visible_files(d.failed)
