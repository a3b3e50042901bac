"""The real daemon as a subprocess on a temp folder tree; tests act only as a user would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

THUMBGEN = str(Path(sys.executable).with_name("thumbgen"))


def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.1,
             message: str = "condition") -> object:
    """Poll until ``predicate()`` is truthy; fail the test with ``message`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {message}")


def visible_files(root: Path) -> list[Path]:
    """Entries a user sees under ``root`` (files, links, FIFOs; no folders, no hidden names)."""
    if not root.exists():
        return []
    return sorted(p for p in root.rglob("*")
                  if (p.is_symlink() or not p.is_dir()) and not any(part.startswith(".")
                                             for part in p.relative_to(root).parts))


class Daemon:
    """One ``thumbgen run`` process on ``base``."""

    def __init__(self, base: Path, env: dict[str, str], name: str = "daemon") -> None:
        self.base = base
        self.env = env
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = base / f"{name}.out"
        self.prefix: list[str] = []  # a command the daemon runs under (setpriv, for example)

    @property
    def inbox(self) -> Path:
        return self.base / "produtos"

    @property
    def output(self) -> Path:
        return self.base / "thumbnails-prontas"

    @property
    def processed(self) -> Path:
        return self.inbox / "_processados"

    @property
    def failed(self) -> Path:
        return self.inbox / "_falhas"

    def start(self, **overrides: str) -> Daemon:
        env = {**self.env, **{f"THUMBGEN_{k}": str(v) for k, v in overrides.items()}}
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen([*self.prefix, THUMBGEN, "run"], cwd=self.base, env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        return self

    def wait_started(self, timeout: float = 30) -> None:
        wait_for(lambda: "watching" in self.log() or not self.running(), timeout,
                 message=f"{self.name} to start")
        assert self.running(), f"{self.name} exited early:\n{self.log()}"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def send(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Send ``signum`` and wait for the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def wait_exit(self, timeout: float = 60) -> int:
        """Wait for the exit code of a stop already asked for (a second SIGTERM would force it)."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
        self._log.close()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def thumbnails(self) -> list[Path]:
        return visible_files(self.output)

    def wait_idle(self, expected_outputs: int, timeout: float = 90,
                  left_alone: tuple[str, ...] = ()) -> None:
        """Wait until the inbox holds no input (but the ``left_alone`` names) and
        ``expected_outputs`` files are in ``_processados/`` or ``_falhas/``."""
        def settled() -> bool:
            inbox_left = [p for p in visible_files(self.inbox)
                          if not p.relative_to(self.inbox).parts[0].startswith("_")
                          and p.relative_to(self.inbox).as_posix() not in left_alone]
            done = len(visible_files(self.processed)) + len(
                [p for p in visible_files(self.failed) if not p.name.endswith(".erro.txt")])
            return not inbox_left and done >= expected_outputs
        wait_for(settled, timeout, message=f"{expected_outputs} files processed; log:\n"
                 + self.log()[-3000:])


def daemon_env(base: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("THUMBGEN_")}
    env.update({
        "THUMBGEN_BASE_PATH": str(base),
        "THUMBGEN_REMOVAL_BACKEND": "local",
        "THUMBGEN_HTTP_PORT": "0",
        "THUMBGEN_SETTLE_SECONDS": "0.3",
        "THUMBGEN_RESCAN_INTERVAL": "2",
        "THUMBGEN_WORKERS": "2",
        "THUMBGEN_SCHEDULER_ENABLED": "false",
        "THUMBGEN_LOG_LEVEL": "debug",
        "THUMBGEN_SHUTDOWN_TIMEOUT": "20",
    })
    env.pop("NOTIFY_SOCKET", None)
    env.pop("JOURNAL_STREAM", None)
    return env


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """An empty thumbgen folder tree (the daemon creates the rest)."""
    for folder in ("produtos", "backgrounds", "thumbnails-prontas"):
        (tmp_path / folder).mkdir()
    return tmp_path


@pytest.fixture
def make_daemon(tree: Path, model_path: Path) -> Iterator[Callable[..., Daemon]]:
    """Factory of daemons on ``tree``; every one still running at the end is killed."""
    started: list[Daemon] = []

    def make(name: str = "daemon", **overrides: str) -> Daemon:
        env = daemon_env(tree)
        env.update({f"THUMBGEN_{k}": str(v) for k, v in overrides.items()})
        daemon = Daemon(tree, env, name)
        started.append(daemon)
        return daemon

    yield make
    for daemon in started:
        if daemon.running():
            daemon.kill()


@pytest.fixture
def daemon(make_daemon: Callable[..., Daemon]) -> Daemon:
    """A started daemon on ``tree``, local removal, fast settle and rescan."""
    d = make_daemon()
    d.start()
    d.wait_started()
    return d
