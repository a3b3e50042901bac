"""The built image, run as a user would (``make test-image``; ``make image`` builds it first).

Every call goes through ``tools/podman.sh``, the one place that knows the engine's flags. The
data folder is a host folder bind-mounted at /data with a read-only root and only /tmp writable
(as in deploy/k8s); photos are dropped on the host side, thumbnails read there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import tomllib
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image

from tests.e2e.conftest import wait_for
from watcher import config, models

pytestmark = [pytest.mark.image, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
ENGINE = ROOT / "tools" / "podman.sh"
IMAGE = os.environ.get("THUMBGEN_IMAGE", "localhost/thumbgen:latest")
MAX_MB = int(os.environ.get("THUMBGEN_IMAGE_MAX_MB", "450"))
PHOTOS = sorted((ROOT / "tests" / "data" / "products").glob("*.jpg"))
UID = 10001  # the image's user (Dockerfile, deploy/k8s runAsUser)
FOLDERS = ("produtos", "backgrounds", "thumbnails-prontas")
# the daemon's own default: podman stop must return within it, with nothing left claimed
SHUTDOWN_TIMEOUT = config.OPTIONS_BY_KEY["SHUTDOWN_TIMEOUT"].default
START_TIMEOUT = 120  # a cold start on a busy 2-core machine: imports, model load, first scan
# Seconds the engine waits after SIGTERM before SIGKILL: podman's and docker's default is 10, below
# SHUTDOWN_TIMEOUT, so a user gives the container more, as compose.yaml (stop_grace_period) and
# deploy/k8s (terminationGracePeriodSeconds) do.
STOP_GRACE = 45


def engine(*args: str, check: bool = True, timeout: float = 120,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(ENGINE), *args], capture_output=True, text=True,
                            timeout=timeout, check=False, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args[:2])} exited {result.returncode}:\n"
                             f"{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    return result


def make_data(root: Path) -> Path:
    """A data folder with the three folders, owned by the image's user (as an operator does)."""
    for name in FOLDERS:
        (root / name).mkdir(parents=True, exist_ok=True)
    for path in [root, *root.rglob("*")]:
        os.chown(path, UID, UID)
    return root


def drop(inbox: Path, photos: list[Path], prefix: str = "") -> list[str]:
    """Copy photos in as a careful uploader does: a hidden name, then a rename."""
    names = []
    for photo in photos:
        name = prefix + photo.name
        shutil.copyfile(photo, inbox / f".{name}.part")
        os.replace(inbox / f".{name}.part", inbox / name)
        names.append(name)
    return names


def thumbnails(data: Path, names: list[str]) -> list[Path]:
    return [data / "thumbnails-prontas" / Path(n).with_suffix(".jpg").name for n in names]


def claimed_files(data: Path) -> list[Path]:
    claims = data / "produtos" / ".thumbgen" / "claimed"
    return [p for p in claims.rglob("*") if not p.is_dir()] if claims.exists() else []


def inspect(name: str) -> dict[str, Any]:
    return json.loads(engine("inspect", name).stdout)[0]


def health_status(name: str) -> str:
    state = inspect(name)["State"]
    return str((state.get("Health") or state.get("Healthcheck") or {}).get("Status"))


def logs(name: str) -> str:
    result = engine("logs", name, check=False)
    return (result.stdout + result.stderr)[-4000:]


class Container:
    """One ``podman run -d`` of the image on a data folder; removed at the end."""

    def __init__(self, name: str, data: Path) -> None:
        self.name, self.data = name, data

    def start(self) -> Container:
        engine("run", "--detach", "--name", self.name, "--read-only", "--read-only-tmpfs=false",
               "--tmpfs", "/tmp", "--volume", f"{self.data}:/data", "--publish", "127.0.0.1::8080",
               "--stop-timeout", str(STOP_GRACE), IMAGE)
        return self

    def exec(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return engine("exec", self.name, *args, check=False, timeout=timeout)

    def healthy(self) -> bool:
        return engine("healthcheck", "run", self.name, check=False).returncode == 0

    def wait_healthy(self) -> None:
        try:
            wait_for(self.healthy, START_TIMEOUT, interval=2, message="the HEALTHCHECK to pass")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{logs(self.name)}") from None

    def remove(self) -> None:
        engine("rm", "--force", "--time", "0", self.name, check=False)


@pytest.fixture(scope="module")
def names() -> Iterator[Callable[[str], str]]:
    """Unique container/project names per run; whatever was started is removed afterwards."""
    made: list[str] = []

    def name(what: str) -> str:
        made.append(f"thumbgen-test-{what}-{os.getpid()}")
        return made[-1]
    yield name
    for n in made:
        engine("rm", "--force", "--time", "0", n, check=False)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory,
            names: Callable[[str], str]) -> Iterator[Container]:
    """The daemon in its container, healthy, on a fresh data folder."""
    container = Container(names("run"), make_data(tmp_path_factory.mktemp("data")))
    container.start()
    try:
        container.wait_healthy()
        yield container
    finally:
        container.remove()


def test_the_image_is_under_its_size_limit() -> None:
    size_mb = int(json.loads(engine("image", "inspect", IMAGE).stdout)[0]["Size"]) / 1e6
    print(f"image {IMAGE}: {size_mb:.0f} MB (limit {MAX_MB} MB)")
    assert size_mb < MAX_MB


def test_the_image_carries_no_compiler_no_tests_no_pip_cache_and_the_verified_model() -> None:
    script = ("command -v gcc cc; ls -d /src; find / -xdev -name test_claim.py; "
              "find / -xdev -type d -path '*/.cache/pip'; "
              'python -c "import hashlib, os; print(hashlib.sha256(open('
              "os.environ['THUMBGEN_MODEL_PATH'], 'rb').read()).hexdigest())\"")
    found = engine("run", "--rm", "--read-only", "--network", "none", "--entrypoint", "sh",
                   IMAGE, "-c", script, check=False).stdout.split()
    assert found == [models.MODEL_SHA256]


def test_the_trimmed_openvino_runs_the_model_on_a_read_only_root() -> None:
    """LOCAL_RUNTIME=openvino in the image: OpenVINO, cut down to its CPU plugin and the ONNX
    frontend, loads the baked-in model and its mask of the probe photo agrees with onnxruntime's."""
    script = ("import os; from pathlib import Path; from PIL import Image; "
              "from watcher.stages.removal import runtime as r; "
              "from watcher.stages.removal.engines import OnnxEngine; "
              "m = Path(os.environ['THUMBGEN_MODEL_PATH']); "
              "e, c = r.open_engine('openvino', m, 1); "
              "p = r.compare(OnnxEngine(m, 1), e, Image.open(r.PROBE_PHOTO).convert('RGB')); "
              "print(c.runtime, p.iou >= r.AGREEMENT)")
    found = engine("run", "--rm", "--read-only", "--network", "none", "--entrypoint", "python",
                   IMAGE, "-c", script).stdout.split()
    assert found == ["openvino", "True"]


def test_the_daemon_runs_as_uid_10001_never_root(running: Container) -> None:
    status = running.exec("cat", "/proc/1/status").stdout
    uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    gids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Gid:"))
    assert uids == [str(UID)] * 4 and gids == [str(UID)] * 4
    assert "thumbgen" in running.exec("cat", "/proc/1/cmdline").stdout
    # every process of the container, seen from the host
    top = engine("top", running.name, "huser", "args").stdout.splitlines()[1:]
    assert top and all(line.split()[0] == str(UID) for line in top), top
    assert inspect(running.name)["Config"]["User"] == f"{UID}:{UID}"


def test_the_healthcheck_passes_and_the_published_port_answers(running: Container) -> None:
    info = inspect(running.name)
    assert info["Config"]["Healthcheck"]["Test"][:2] == ["CMD", "python"]
    assert running.healthy()
    wait_for(lambda: health_status(running.name) == "healthy", 60,
             message="podman to record the container as healthy")
    host_port = engine("port", running.name, "8080").stdout.strip().rsplit(":", 1)[1]
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{host_port}/livez", timeout=10) as answer:
        assert answer.status == 200


def test_photos_dropped_on_the_host_become_thumbnails(running: Container) -> None:
    names = drop(running.data / "produtos", PHOTOS[:3])
    expected = thumbnails(running.data, names)
    try:
        wait_for(lambda: all(p.exists() for p in expected), 180, message="the thumbnails")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{logs(running.name)}") from None
    for path in expected:
        with Image.open(path) as thumb:
            assert thumb.format == "JPEG" and thumb.size == (1200, 1200)
        assert path.stat().st_uid == UID
    processed = running.data / "produtos" / "_processados"
    wait_for(lambda: all((processed / n).exists() for n in names), 30,
             message="the originals archived")
    assert not (running.data / "produtos" / "_falhas").exists() or not any(
        (running.data / "produtos" / "_falhas").iterdir())


def test_thumbgen_health_and_backup_run_inside_the_container(running: Container) -> None:
    health = running.exec("thumbgen", "health")
    assert health.returncode == 0, health.stdout + health.stderr
    assert json.loads(health.stdout)["status"] == "healthy"
    backup = running.exec("thumbgen", "backup", "produtos", "thumbnails", timeout=300)
    assert backup.returncode == 0, backup.stdout + backup.stderr
    archives = sorted((running.data / "backups").glob("*.tar.gz"))
    assert {a.name.split("_")[0] for a in archives} == {"produtos", "thumbnails"}
    listed = running.exec("thumbgen", "backups")
    assert listed.returncode == 0 and archives[0].name.split("_", 1)[1][:8] in listed.stdout


def test_podman_stop_exits_0_within_the_shutdown_timeout_with_claims_released(
        tmp_path: Path, names: Callable[[str], str]) -> None:
    container = Container(names("stop"), make_data(tmp_path / "data"))
    container.start()
    try:
        container.wait_healthy()
        dropped = drop(container.data / "produtos", PHOTOS)
        wait_for(lambda: claimed_files(container.data), 60, message="a photo claimed")
        started = time.monotonic()
        engine("stop", container.name, timeout=STOP_GRACE + 30)
        took = time.monotonic() - started
        print(f"podman stop took {took:.1f} s (SHUTDOWN_TIMEOUT {SHUTDOWN_TIMEOUT:.0f} s)")
        state = inspect(container.name)["State"]
        assert state["ExitCode"] == 0, logs(container.name)
        assert not state["OOMKilled"]
        assert took < SHUTDOWN_TIMEOUT
        assert claimed_files(container.data) == []
        # every photo is either finished (thumbnail + original archived) or back in the inbox
        inbox = container.data / "produtos"
        for name, thumb in zip(dropped, thumbnails(container.data, dropped)):
            done = thumb.exists() and (inbox / "_processados" / name).exists()
            assert done or (inbox / name).exists(), name
    finally:
        container.remove()


def test_compose_brings_the_daemon_up_and_turns_a_drop_into_thumbnails(
        tmp_path: Path, names: Callable[[str], str]) -> None:
    """compose.yaml as shipped, copied beside its own data folders, with the built image."""
    project = tmp_path / "project"
    make_data(project)
    for name in ("logs", "backups"):
        (project / name).mkdir()
        os.chown(project / name, UID, UID)
    (project / "config").mkdir()
    shutil.copyfile(ROOT / "compose.yaml", project / "compose.yaml")
    # the name make image gives its build (localhost/thumbgen:<version>, found by this short name)
    service = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["thumbgen"]
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert service["image"] == f"thumbgen:{version}"
    env = {**os.environ, "THUMBGEN_HOST_PORT": str(_free_port()),
           "THUMBGEN_GRADIO_TOKEN": "token-from-the-shell"}
    project_name = names("compose")
    compose = ["compose", "--project-name", project_name, "--file", str(project / "compose.yaml")]
    try:
        engine(*compose, "up", "--detach", "--no-build", env=env, timeout=300)
        (container,) = _compose_containers(project)
        wait_for(lambda: engine("healthcheck", "run", container, check=False).returncode == 0,
                 START_TIMEOUT, interval=2, message="the compose service's HEALTHCHECK")
        token = engine("exec", container, "printenv", "THUMBGEN_GRADIO_TOKEN").stdout.strip()
        assert token == env["THUMBGEN_GRADIO_TOKEN"]
        dropped = drop(project / "produtos", PHOTOS[3:5])
        expected = thumbnails(project, dropped)
        try:
            wait_for(lambda: all(p.exists() for p in expected), 180,
                     message="the compose thumbnails")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{logs(container)}") from None
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://127.0.0.1:{env['THUMBGEN_HOST_PORT']}/livez",
                         timeout=10) as answer:
            assert answer.status == 200
    finally:
        # podman-compose 1.0.3 ignores stop_grace_period: down waits 1 s unless told
        down = engine(*compose, "down", "--timeout", str(STOP_GRACE), env=env, check=False,
                      timeout=300)
        # podman-compose 1.0.3 leaves the project's network behind
        engine("network", "rm", f"{project_name}_default", check=False)
    assert down.returncode == 0, down.stderr[-2000:]
    assert _compose_containers(project) == []
    assert claimed_files(project) == []


def _compose_containers(project: Path) -> list[str]:
    """Names of the running containers whose bind mounts come from ``project``."""
    ids = engine("ps", "--quiet").stdout.split()
    if not ids:
        return []
    found = []
    for info in json.loads(engine("inspect", *ids).stdout):
        if any(str(m.get("Source", "")).startswith(str(project)) for m in info["Mounts"]):
            found.append(info["Name"])
    return found


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
