"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from watcher import config, models

if TYPE_CHECKING:
    from tests.gradio_app import GradioServer

DATA_DIR = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def model_path() -> Path:
    """The verified U²-Net-p model in the user's model cache.

    Fetched into the default path on purpose: after ``make setup`` it is already there and this
    costs one checksum; on a fresh machine the first test run downloads it once.
    """
    return models.fetch(models.default_model_path())


@pytest.fixture
def data_dir() -> Path:
    """``tests/data``: real files, each listed with its source and licence in SOURCES.md."""
    return DATA_DIR


@pytest.fixture
def thumbgen_env(tmp_path: Path) -> dict[str, str]:
    """``THUMBGEN_*`` variables for a thumbgen tree at ``tmp_path/base``.

    An empty config file, so neither the caller's environment nor a ``config/thumbgen.toml`` in
    the working directory changes what the tests see.
    """
    base = tmp_path / "base"
    base.mkdir(exist_ok=True)
    empty = tmp_path / "empty.toml"
    empty.touch()
    return {"THUMBGEN_CONFIG": str(empty), "THUMBGEN_BASE_PATH": str(base),
            "THUMBGEN_WORKER_ID": "test-worker"}


@pytest.fixture
def make_settings(thumbgen_env: dict[str, str]) -> Callable[..., config.Settings]:
    """Settings for the tree of ``thumbgen_env``: ``make_settings(SETTLE_SECONDS=0)``."""
    def make(**overrides: object) -> config.Settings:
        env = {**thumbgen_env, **{f"THUMBGEN_{k}": str(v) for k, v in overrides.items()}}
        return config.load(env=env)
    return make


@pytest.fixture
def run_thumbgen(thumbgen_env: dict[str, str]) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the ``thumbgen`` console script on the tree of ``thumbgen_env``, as a user would."""
    script = str(Path(sys.executable).with_name("thumbgen"))

    def run(*args: str, **overrides: object) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("THUMBGEN_")}
        env.update(thumbgen_env)
        env.update({f"THUMBGEN_{k}": str(v) for k, v in overrides.items()})
        return subprocess.run([script, *args], env=env, capture_output=True, text=True,
                              timeout=120, check=False)
    return run


@pytest.fixture(scope="session")
def gradio_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GradioServer]:
    """A real Gradio server mirroring the background-removal Space (``tests/gradio_app.py``),
    started once per session: 4 calls at once, 4 more may wait in its queue (so a burst of up
    to 4 calls is never refused, however slowly the queue starts them)."""
    from tests.gradio_app import GradioServer

    server = GradioServer(tmp_path_factory.mktemp("gradio"), concurrency=4, max_size=4).start()
    yield server
    server.stop()


@pytest.fixture
def remote(gradio_server: GradioServer) -> Iterator[GradioServer]:
    """The shared Gradio server with no hooks and fresh counters; hung calls released after."""
    gradio_server.reset()
    yield gradio_server
    gradio_server.reset()


class HangingRemover:
    """A remover whose ``mask()`` blocks until ``release`` is set: it stands in for a remote app
    that accepted the call and never answers. ``entered`` is set when a call is stuck in it."""

    name = "hanging"
    cpu_bound = False

    def __init__(self) -> None:
        import threading

        self.entered = threading.Event()
        self.release = threading.Event()

    def mask(self, image: Any) -> Any:
        from PIL import Image

        self.entered.set()
        self.release.wait(60)
        return Image.new("L", image.size, 255)

    def close(self) -> None:
        self.release.set()


@pytest.fixture
def running_app(make_settings: Callable[..., config.Settings]) -> Iterator[Callable[..., Any]]:
    """Factory: ``running_app(remover, stall_after, before_run, **settings)`` → ``(app, health)``.

    A real ``App`` (watcher, workers, main loop) on the ``thumbgen_env`` tree, run in a thread
    until the test ends, with a ``Health`` attached; returns once the start-up scan is queued.
    """
    import threading

    from prometheus_client import CollectorRegistry

    from watcher.app import App
    from watcher.health import Health
    from watcher.metrics import Metrics

    started: list[tuple[Any, threading.Thread]] = []

    def start(remover: Any, stall_after: float = 60.0,
              before_run: Callable[[Any, Any], None] | None = None,
              **overrides: object) -> tuple[Any, Any]:
        values: dict[str, object] = {"SETTLE_SECONDS": 0, "WORKERS": 1,
                                     "MAX_CONCURRENT_REQUESTS": 1, "SCHEDULER_ENABLED": "false",
                                     "OUTPUT_SIZE": 300}
        settings = make_settings(**{**values, **overrides})
        app = App(settings, remover, Metrics(CollectorRegistry()))
        health = Health(app, stall_after=stall_after, secrets=[settings.gradio_token])
        health.attach()
        if before_run is not None:
            before_run(app, health)
        thread = threading.Thread(target=app.run, name="app", daemon=True)
        thread.start()
        started.append((app, thread))
        assert app.ready.wait(30), "the app did not start"
        return app, health

    yield start
    for app, thread in started:
        app.flags.stop.set()
        app.remover.close()
        thread.join(30)


@pytest.fixture
def box(tmp_path: Path) -> Path:
    """An empty inbox folder, ``produtos/``, in a temp folder."""
    folder = tmp_path / "produtos"
    folder.mkdir()
    return folder
