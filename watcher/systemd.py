"""systemd integration: READY, STATUS, WATCHDOG and STOPPING over the notify socket.

A no-op unless systemd started the daemon with ``NOTIFY_SOCKET`` (``Type=notify``); then
systemd-python is required, and its absence is a clear start-up error rather than a service that
systemd kills after ``TimeoutStartSec`` for never saying READY.

- ``READY=1`` once the observer runs and the start-up scan is done (the app's ``on_ready``; the
  first photos are fed to the workers while it runs).
- ``STATUS=`` with queue depth, in-flight and finished counts every few seconds, so
  ``systemctl status thumbgen`` shows what the daemon is doing.
- ``WATCHDOG=1`` every ``WATCHDOG_USEC / 2``, sent from the main loop and only while liveness holds
  (watcher alive, workers progressing): a stuck pipeline stops the pings, and systemd restarts the
  service after ``WatchdogSec=``. A stuck main loop stops them as well.
- ``STOPPING=1`` when shutdown begins.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from loguru import logger

from watcher.errors import ConfigError

if TYPE_CHECKING:
    from watcher.app import App
    from watcher.health import Verdict

STATUS_SECONDS = 5.0


def watchdog_interval(env: Mapping[str, str], pid: int | None = None) -> float | None:
    """Seconds between pings (half of ``WATCHDOG_USEC``), or None when the watchdog is off.

    ``WATCHDOG_PID``, when set, names the process the watchdog is meant for: a child that
    inherited the environment must not ping in its parent's place.
    """
    try:
        usec = int(env.get("WATCHDOG_USEC", "0"))
    except ValueError:
        return None
    owner = env.get("WATCHDOG_PID", "")
    if usec <= 0 or (owner and owner != str(pid if pid is not None else os.getpid())):
        return None
    return usec / 2 / 1_000_000


def _sd_notify(socket_path: str) -> Callable[[str], Any]:
    try:
        from systemd import daemon
    except ImportError:
        raise ConfigError("NOTIFY_SOCKET", socket_path,
                          "systemd expects start-up notifications (Type=notify) but systemd-python "
                          "is not installed: pip install 'thumbgen[systemd]'") from None
    return daemon.notify


def status_line(app: App) -> str:
    pool = app.pool
    counts = {getattr(k, "value", str(k)): v for k, v in dict(pool.counts).items()}
    return (f"queue {app.queue_depth()}, in flight {len(pool.in_flight)}, finished "
            f"{pool.done_count} (done {counts.get('done', 0)}, rejected "
            f"{counts.get('rejected', 0)}, failed {counts.get('failed', 0)})")


class Notifier:
    """Speaks sd_notify for one App; every method is a cheap no-op when not under systemd."""

    def __init__(self, live: Callable[[], Verdict], env: Mapping[str, str] | None = None,
                 notify: Callable[[str], Any] | None = None,
                 status_every: float = STATUS_SECONDS) -> None:
        env = os.environ if env is None else env
        self.socket = env.get("NOTIFY_SOCKET", "")
        self.enabled = bool(self.socket)
        self.live = live
        self._notify = notify if notify or not self.enabled else _sd_notify(self.socket)
        self.ping_every = watchdog_interval(env) if self.enabled else None
        self.status_every = status_every
        self._next_status = 0.0
        self._next_ping = 0.0
        self._stuck = False

    def attach(self, app: App) -> None:
        if not self.enabled:
            return
        app.on_ready.append(self.ready)
        app.on_tick.append(self.tick)
        app.on_stopping.append(self.stopping)
        logger.info("systemd: notifying {}{}", self.socket,
                    f", watchdog ping every {self.ping_every:.1f} s" if self.ping_every else "")

    def send(self, *assignments: str) -> None:
        if self._notify is not None and not self._notify("\n".join(assignments)):
            logger.debug("sd_notify({}) was not delivered", assignments)

    def ready(self, app: App) -> None:
        self.send("READY=1", f"STATUS=ready: {status_line(app)}")
        self._next_status = time.monotonic() + self.status_every

    def tick(self, app: App) -> None:
        now = time.monotonic()
        if self.ping_every is not None and now >= self._next_ping:
            self._watchdog(now)
        if now >= self._next_status:
            self._next_status = now + self.status_every
            prefix = "STUCK (watchdog pings stopped): " if self._stuck else ""
            self.send(f"STATUS={prefix}{status_line(app)}")

    def _watchdog(self, now: float) -> None:
        verdict = self.live()
        if verdict.ok:
            self.send("WATCHDOG=1")
            self._next_ping = now + (self.ping_every or 0)
            if self._stuck:
                logger.info("liveness is back; watchdog pings resume")
                self._stuck = False
            return
        if not self._stuck:
            self._stuck = True
            self._next_status = now  # tell systemctl status right away
            logger.error("not alive ({}); watchdog pings stop and systemd will restart the "
                         "service", "; ".join(verdict.problems))

    def stopping(self, app: App) -> None:
        self.send("STOPPING=1", f"STATUS=stopping: {len(app.pool.in_flight)} file(s) in flight")


__all__ = ["Notifier", "watchdog_interval", "status_line"]
