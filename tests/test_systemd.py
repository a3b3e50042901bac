"""sd_notify: READY, STATUS, WATCHDOG only while alive, STOPPING — over a real datagram socket."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.conftest import HangingRemover
from tests.e2e.conftest import wait_for
from tests.sd_notify import NotifyListener
from watcher.errors import ConfigError
from watcher.health import Verdict
from watcher.systemd import Notifier, watchdog_interval


@pytest.mark.parametrize(("env", "expected"), [
    ({"WATCHDOG_USEC": "60000000"}, 30.0),
    ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "4242"}, 0.5),
    ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
    ({}, None),
])
def test_watchdog_interval_is_half_the_timeout_for_this_process(
        env: dict[str, str], expected: float | None) -> None:
    assert watchdog_interval(env, pid=4242) == expected


def test_without_notify_socket_nothing_is_hooked() -> None:
    app = SimpleNamespace(on_ready=[], on_tick=[], on_stopping=[])
    notifier = Notifier(lambda: Verdict(True), env={"WATCHDOG_USEC": "1000000"})
    notifier.attach(app)  # type: ignore[arg-type]
    assert not notifier.enabled and notifier.ping_every is None
    assert (app.on_ready, app.on_tick, app.on_stopping) == ([], [], [])


def test_notify_socket_without_systemd_python_is_a_clear_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "systemd", None)  # import systemd → ImportError
    with pytest.raises(ConfigError) as err:
        Notifier(lambda: Verdict(True), env={"NOTIFY_SOCKET": "/run/systemd/notify"})
    assert err.value.key == "NOTIFY_SOCKET"
    assert "pip install 'thumbgen[systemd]'" in str(err.value)


@pytest.fixture
def listener(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[NotifyListener]:
    listen = NotifyListener(tmp_path / "notify.sock")
    # sd_notify reads the process environment, as it does under systemd
    monkeypatch.setenv("NOTIFY_SOCKET", str(listen.path))
    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield listen
    listen.close()


def test_pings_stop_while_a_file_is_stuck_and_resume_after(
        running_app: Callable[..., Any], listener: NotifyListener, data_dir: Path) -> None:
    remover = HangingRemover()

    def attach(app: Any, health: Any) -> None:
        Notifier(health.live, status_every=0.5).attach(app)

    app, health = running_app(remover, stall_after=1.0, before_run=attach)
    ready = wait_for(lambda: listener.first("READY"), 10, message="READY=1")
    assert ready["STATUS"].startswith("ready: queue 0, in flight 0, finished 0")

    # pings every WATCHDOG_USEC/2 = 0.2 s while alive
    start = time.monotonic()
    time.sleep(1.5)
    pings = listener.times("WATCHDOG", since=start)
    assert 4 <= len(pings) <= 9, pings
    assert max(b - a for a, b in zip(pings, pings[1:])) < 0.45

    # a worker stuck inside a file: after stall_after the pings stop
    # whole, in one rename: with SETTLE_SECONDS 0 a copy in progress could be taken cut short
    hidden = app.settings.upload_path / ".books.jpg.part"
    shutil.copyfile(data_dir / "products" / "books.jpg", hidden)
    hidden.rename(app.settings.upload_path / "books.jpg")
    assert remover.entered.wait(30)
    wait_for(lambda: not health.live().ok, 10, message="liveness to fail")
    stuck_since = time.monotonic()
    time.sleep(1.2)
    assert listener.times("WATCHDOG", since=stuck_since + 0.05) == []
    assert any(status.startswith("STUCK") and "in flight 1" in status
               for status in listener.values("STATUS"))

    # the file moves on: liveness and pings come back
    remover.release.set()
    wait_for(lambda: listener.times("WATCHDOG", since=time.monotonic() - 0.3), 10,
             message="pings to resume")

    app.flags.stop.set()
    wait_for(lambda: listener.first("STOPPING"), 10, message="STOPPING=1")
