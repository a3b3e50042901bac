"""The health checks over a real running App: the /health document, liveness and readiness."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.conftest import HangingRemover
from tests.e2e.conftest import wait_for
from watcher import health as health_mod
from watcher.health import DEGRADED, HEALTHY, UNHEALTHY, DiskThresholds, Health
from watcher.stages.removal.local import LocalRemover

TOKEN = "hf_SecretSecretSecret123"
MIB = 1024**2


class RemoteDouble:
    """A remote remover as /health sees it: its ``state()`` and nothing else of interest."""

    name = "gradio"
    cpu_bound = False

    def __init__(self, state: dict[str, Any] | Exception) -> None:
        self._state = state

    def state(self) -> dict[str, Any]:
        if isinstance(self._state, Exception):
            raise self._state
        return self._state

    def mask(self, image: Image.Image) -> Image.Image:
        return Image.new("L", image.size, 255)

    def close(self) -> None:
        pass


def _drop_photo(app: Any, data_dir: Path, name: str = "books.jpg") -> None:
    # whole, in one rename: with SETTLE_SECONDS 0 a photo still being copied would be taken cut
    # short and rejected as incomplete (it happened under load)
    hidden = app.settings.upload_path / f".{name}.part"
    shutil.copyfile(data_dir / "products" / name, hidden)
    hidden.rename(app.settings.upload_path / name)


def _not_alive(health: Health) -> Any:
    verdict = health.live()
    return None if verdict.ok else verdict


def _sample(app: Any, name: str, **labels: str) -> float | None:
    return app.metrics.registry.get_sample_value(name, labels)


def test_the_document_of_a_daemon_that_works(running_app: Callable[..., Any], model_path: Path,
                                             data_dir: Path) -> None:
    app, health = running_app(LocalRemover(model_path), MODEL_PATH=model_path,
                              LOCAL_RUNTIME="onnxruntime")
    _drop_photo(app, data_dir)
    wait_for(lambda: app.pool.done_count == 1, 60, message="the photo processed")

    doc = health.document()

    assert set(doc) >= {"status", "timestamp", "uptime", "checks"}
    assert set(doc["checks"]) == {"application", "dependencies", "storage", "resources"}
    assert doc["status"] == health_mod.worst(c["status"] for c in doc["checks"].values())
    application = doc["checks"]["application"]
    assert application["status"] == HEALTHY
    assert application["watcher_alive"] and application["workers_progressing"]
    assert (application["queue_depth"], application["in_flight"]) == (0, 0)
    assert application["last_file_done"] == "books.jpg"
    assert application["outcomes"]["done"] == 1
    dependencies = doc["checks"]["dependencies"]
    assert dependencies["status"] == HEALTHY
    assert dependencies["local_model"] == {
        "path": str(model_path), "present": True, "loaded": True,
        "runtime_setting": "onnxruntime", "runtime": "onnxruntime", "precision": "fp32",
        "runtime_why": "LOCAL_RUNTIME=onnxruntime"}
    storage = doc["checks"]["storage"]
    assert storage["status"] in (HEALTHY, DEGRADED)  # degraded only if this disk is nearly full
    assert all(f["writable"] for f in storage["folders"].values())
    assert storage["disks"][0]["free_bytes"] > 0
    resources = doc["checks"]["resources"]
    assert resources["memory_rss_bytes"] > 10 * MIB and resources["threads"] > 2
    # the write probes leave nothing behind
    assert not list(app.settings.base_path.rglob(".thumbgen-probe*"))
    assert _sample(app, "thumbgen_dependency_up", dependency="local_model") == 1
    assert _sample(app, "thumbgen_storage_free_bytes", folder="output") > 0


def test_not_ready_while_the_output_folder_is_unusable(running_app: Callable[..., Any],
                                                       model_path: Path) -> None:
    app, health = running_app(LocalRemover(model_path), MODEL_PATH=model_path)
    assert health.ready().ok
    output = app.settings.output_path
    output.rename(output.with_name("moved"))
    output.write_text("a file where the folder was")  # root ignores permissions, not this

    verdict = health.ready()
    assert not verdict.ok
    assert verdict.problems == [f"output folder {output}: not a folder"]
    assert health.document()["status"] == UNHEALTHY
    assert health.live().ok  # the daemon itself is fine: no restart needed

    output.unlink()
    output.with_name("moved").rename(output)
    assert health.ready().ok


def test_a_file_stuck_in_work_stops_liveness_until_it_moves(running_app: Callable[..., Any],
                                                            data_dir: Path) -> None:
    remover = HangingRemover()
    app, health = running_app(remover, stall_after=1.0)
    assert health.live().ok
    _drop_photo(app, data_dir)
    assert remover.entered.wait(30)

    verdict = wait_for(lambda: _not_alive(health), 10, message="liveness to fail")
    assert any("books.jpg has been in work for" in p for p in verdict.problems)
    application = health.document()["checks"]["application"]
    assert application["status"] == UNHEALTHY
    assert not application["workers_progressing"]
    assert application["oldest_in_flight_seconds"] >= 1.0

    remover.release.set()
    wait_for(lambda: health.live().ok, 10, message="liveness to come back")


def test_the_watcher_gone_fails_liveness(running_app: Callable[..., Any], model_path: Path) -> None:
    app, health = running_app(LocalRemover(model_path), MODEL_PATH=model_path)
    inbox = app.settings.upload_path
    # moved away in one rename, and a plain file put in its place: the main loop's restart
    # cannot make the folder again, so the watcher stays gone (removing the tree file by file
    # raced with that restart, which re-creates a missing inbox; when it wins the race here
    # too, the folder it made is moved away in turn)
    for attempt in range(20):
        if inbox.is_dir():
            inbox.rename(inbox.with_name(f"produtos-movido-{attempt}"))
        try:
            os.close(os.open(inbox, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            break
        except FileExistsError:
            continue
    assert inbox.is_file()

    verdict = wait_for(lambda: _not_alive(health), 10, message="liveness to fail")
    assert verdict.problems[0].startswith("the file watcher stopped")


def test_a_remote_that_is_down_degrades_but_never_fails_liveness(
        running_app: Callable[..., Any], model_path: Path) -> None:
    remote = RemoteDouble({"backend": "gradio", "reachable": False, "breaker": "open",
                           "fallback_in_use": True, "waiting": False,
                           "last_error": f"unreachable: refused with token {TOKEN}"})
    app, health = running_app(remote, REMOVAL_BACKEND="gradio", MODEL_PATH=model_path,
                              GRADIO_API_URL="http://127.0.0.1:9", GRADIO_TOKEN=TOKEN)

    dependencies = health.dependencies()
    assert dependencies["status"] == DEGRADED
    assert dependencies["remote"]["reachable"] is False
    assert dependencies["remote"]["breaker"] == "open"
    assert dependencies["remote"]["last_error"] == "unreachable: refused with token ****"
    assert len(dependencies["problems"]) == 3
    assert health.live().ok and health.ready().ok
    assert health.document()["status"] in (DEGRADED,)
    assert _sample(app, "thumbgen_dependency_up", dependency="remote") == 0
    assert _sample(app, "thumbgen_remote_breaker_open", backend="gradio") == 1


def test_a_remover_state_that_raises_is_reported_not_raised(
        running_app: Callable[..., Any], model_path: Path) -> None:
    app, health = running_app(RemoteDouble(RuntimeError("boom")), REMOVAL_BACKEND="gradio",
                              MODEL_PATH=model_path, GRADIO_API_URL="http://127.0.0.1:9")
    remote = health.dependencies()["remote"]
    assert remote["state"] == {"state_error": "RuntimeError: boom"}
    assert remote["reachable"] is None


def test_a_local_backend_without_its_model_is_unhealthy(running_app: Callable[..., Any],
                                                        tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "u2netp.onnx"
    app, health = running_app(LocalRemover(missing), MODEL_PATH=missing)
    dependencies = health.dependencies()
    assert dependencies["status"] == UNHEALTHY
    assert "thumbgen models fetch" in dependencies["problems"][0]
    assert _sample(app, "thumbgen_dependency_up", dependency="local_model") == 0


@pytest.mark.parametrize(("free", "total", "status"), [
    (100 * MIB, 10_000 * MIB, UNHEALTHY),
    (600 * MIB, 10_000 * MIB, DEGRADED),       # below 1 GiB
    (4_000 * MIB, 100_000 * MIB, DEGRADED),    # below 5 %
    (4_000 * MIB, 10_000 * MIB, HEALTHY),
])
def test_disk_thresholds(free: int, total: int, status: str) -> None:
    assert DiskThresholds().status(free, total) == status


def test_the_stall_limit_covers_every_wait_of_every_remote_attempt(
        make_settings: Callable[..., Any]) -> None:
    def stall(**overrides: object) -> float:
        return health_mod.stall_seconds(make_settings(**overrides))

    remote = {"GRADIO_API_URL": "http://127.0.0.1:9", "WORKERS": 2,
              "MAX_CONCURRENT_REQUESTS": 4}
    assert stall(REMOVAL_BACKEND="local", GRADIO_TIMEOUT=600) == 60
    assert stall(**remote, GRADIO_TIMEOUT=5, GRADIO_RETRY_ATTEMPTS=1) == 60
    # per attempt: a slot behind one hung call, its own call, back-off
    assert stall(**remote, GRADIO_TIMEOUT=60, GRADIO_RETRY_ATTEMPTS=3) == 3 * (60 + 60 + 8) + 30
    # six callers and three calls a minute: two minutes of rate limit per attempt
    assert stall(**remote, GRADIO_TIMEOUT=60, GRADIO_RETRY_ATTEMPTS=1,
                 RATE_LIMIT_PER_MINUTE=3) == 60 + 120 + 60 + 8 + 30


def test_probe_write(tmp_path: Path) -> None:
    assert health_mod.probe_write(tmp_path) is None
    assert health_mod.probe_write(tmp_path / "missing") == "missing"
    (tmp_path / "file").write_text("x")
    assert health_mod.probe_write(tmp_path / "file") == "not a folder"
    assert list(tmp_path.iterdir()) == [tmp_path / "file"]


def test_health_before_start_says_starting(make_settings: Callable[..., Any],
                                           model_path: Path) -> None:
    from prometheus_client import CollectorRegistry

    from watcher.app import App
    from watcher.metrics import Metrics

    app = App(make_settings(), LocalRemover(model_path), Metrics(CollectorRegistry()))
    health = Health(app)
    assert health.live().ok and not health.ready().ok
    assert health.ready().problems[0] == "the start-up scan is not done yet"
    assert health.document()["checks"]["application"]["status"] == DEGRADED
