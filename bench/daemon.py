"""The real daemon (`thumbgen run`) as a subprocess on a temporary folder tree, as a user runs it.

Files are dropped the way an uploader finishes them: written to a staging folder on the same
filesystem, then renamed into the inbox (an atomic ``mv``). Progress is read from the folders
(thumbnails published, originals rejected) and per-file stage times from ``logs/app.log``.
Memory is the resident set of the daemon and all its children, sampled by a background thread.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable
from pathlib import Path

import psutil

from background import Background

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
THUMBGEN = str(Path(sys.executable).with_name("thumbgen"))


class DaemonExited(RuntimeError):
    """The daemon stopped while the bench still needed it (a crash, or a signal from elsewhere)."""


class Daemon:
    """One ``thumbgen run`` on a fresh tree under ``bench/.data/`` (on the repo's disk, so
    publishing fsyncs a real filesystem). Use as a context manager: the tree is removed after."""

    def __init__(self, name: str, command: list[str] | None = None, **settings: object) -> None:
        self.name = name
        self.command = command or [THUMBGEN, "run"]
        self.settings = {"WORKERS": 2, "REMOVAL_BACKEND": "local", "HTTP_PORT": 0,
                         "SCHEDULER_ENABLED": "false", "SETTLE_SECONDS": 0.2,
                         "LOG_LEVEL": "info", **settings}
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Daemon:
        (ROOT / ".data").mkdir(exist_ok=True)
        self.base = Path(tempfile.mkdtemp(prefix=f"daemon-{self.name}-", dir=ROOT / ".data"))
        self.inbox = self.base / "produtos"
        self.output = self.base / "thumbnails-prontas"
        self.staging = self.base / "staging"
        for folder in (self.inbox, self.output, self.staging):
            folder.mkdir()
        shutil.copytree(REPO / "backgrounds", self.base / "backgrounds")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("THUMBGEN_")}
        env.update({f"THUMBGEN_{k}": str(v) for k, v in self.settings.items()})
        env["THUMBGEN_BASE_PATH"] = str(self.base)
        env["THUMBGEN_CONFIG"] = os.devnull  # code defaults + the settings above, nothing else
        return env

    def start(self, timeout: float = 60) -> None:
        self._out = (self.base / "daemon.out").open("wb")
        self.proc = subprocess.Popen(self.command, cwd=self.base, env=self.env(),
                                     stdout=self._out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.ps = psutil.Process(self.proc.pid)
        deadline = time.monotonic() + timeout
        while "watching" not in self.console():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the daemon did not start:\n{self.console()[-3000:]}")
            time.sleep(0.05)

    def stop(self, timeout: float = 60) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait(10)
        self._out.close()
        return code

    def console(self) -> str:
        try:
            return (self.base / "daemon.out").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- what a user sees ----------------------------------------------------------------------

    def drop(self, files: Iterable[Path], names: Iterable[str] | None = None) -> float:
        """Stage copies of ``files``, then rename them all into the inbox; returns the
        monotonic time of the first rename."""
        files = list(files)
        names = list(names) if names is not None else [f.name for f in files]
        staged = []
        for src, name in zip(files, names):
            dst = self.staging / name
            shutil.copyfile(src, dst)
            staged.append(dst)
        return self.move_in(staged)

    def move_in(self, staged: list[Path]) -> float:
        start = time.monotonic()
        for path in staged:
            os.rename(path, self.inbox / path.name)
        return start

    def finished(self) -> int:
        """Inputs the daemon is done with: thumbnails published plus files rejected."""
        published = sum(1 for e in os.scandir(self.output) if not e.name.startswith("."))
        failed = self.inbox / "_falhas"
        rejected = sum(1 for e in os.scandir(failed) if not e.name.endswith(".erro.txt")) \
            if failed.is_dir() else 0
        return published + rejected

    def wait_finished(self, count: int, timeout: float) -> float | None:
        """Monotonic time when ``count`` inputs are finished, or None on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.finished() >= count:
                return time.monotonic()
            self.check_alive()
            time.sleep(0.01)
        return None

    def check_alive(self) -> None:
        """Raise ``DaemonExited`` (with the end of its console) if the daemon is gone."""
        code = self.proc.poll() if self.proc is not None else None
        if code is not None:
            tail = "\n".join("    " + line[:200] for line in self.console().splitlines()[-6:])
            raise DaemonExited(f"the daemon exited ({code}) before the bench was done; "
                               f"its last lines:\n{tail}")

    # -- what the daemon says ------------------------------------------------------------------

    def records(self) -> list[dict[str, object]]:
        """Per-file summary records of logs/app.log (the lines that carry ``stages``)."""
        out = []
        try:
            lines = (self.base / "logs" / "app.log").read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return out
        for line in lines:
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc.get("stages"), dict) and doc.get("outcome"):
                out.append(doc)
        return out

    def metric(self, name: str) -> float | None:
        """A sample of /metrics (unlabelled), read through the address file HTTP_PORT=0 leaves."""
        return self.metrics().get(name)

    def metrics(self) -> dict[str, float]:
        """Every sample of /metrics by its name and labels as written there
        (``thumbgen_files_total{outcome="done"}``); empty when the daemon does not answer."""
        try:
            url = json.loads((self.inbox / ".thumbgen" / "http.json").read_text())["url"]
            with urllib.request.urlopen(f"{url}/metrics", timeout=2) as resp:
                text = resp.read().decode()
        except (OSError, ValueError, KeyError):
            return {}
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                try:
                    samples[key] = float(value)
                except ValueError:
                    pass
        return samples

    def rss(self) -> int:
        """Resident bytes of the daemon and every child it has."""
        try:
            procs = [self.ps, *self.ps.children(recursive=True)]
        except psutil.Error:
            return 0
        total = 0
        for p in procs:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total


class RssSampler(Background):
    """Samples ``daemon.rss()`` every ``interval`` seconds in a thread, while inside ``with``."""

    def __init__(self, daemon: Daemon, interval: float = 0.05) -> None:
        self.daemon = daemon
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        super().__init__("rss-sampler")

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), self.daemon.rss()))
            self._stop.wait(self.interval)

    @property
    def peak(self) -> int:
        return max((rss for _, rss in self.samples), default=0)

    def between(self, start: float, end: float) -> list[int]:
        return [rss for t, rss in self.samples if start <= t <= end]
