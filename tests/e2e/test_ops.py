"""Operating the real daemon: HTTP health and metrics, JSON logs, systemd notifications.

The daemon runs with ``HTTP_PORT=0``; tests find its address where an operator's tools would, in
``produtos/.thumbgen/http.json``.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import THUMBGEN, Daemon, wait_for
from tests.sd_notify import NotifyListener
from tests.slow_client import probe_while_trickling
from watcher.errors import REJECT_KINDS, UNEXPECTED
from watcher.stages.removal import runtime

pytestmark = pytest.mark.e2e

PHOTOS = ("books.jpg", "mugs.jpg")
JUNK = {"notes.jpg": b"this is a shopping list, not a photo\n",
        "scan.png": b"\x89PNG\r\n\x1a\n" + b"\x00" * 40}


def base_url(d: Daemon) -> str:
    path = d.inbox / ".thumbgen" / "http.json"

    def read() -> str | None:
        try:
            return str(json.loads(path.read_text())["url"])
        except (OSError, ValueError, KeyError):
            assert d.running(), f"the daemon exited:\n{d.log()}"
            return None
    return str(wait_for(read, 30, message="the HTTP address file"))


def get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def get_json(url: str) -> tuple[int, dict[str, Any]]:
    status, body = get(url)
    return status, json.loads(body)


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    status, body = get(url + "/metrics")
    assert status == 200
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}


def sample(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
           **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def thumbgen_health(d: Daemon) -> tuple[int, str, str]:
    result = subprocess.run([THUMBGEN, "health"], cwd=d.base, env=d.env, capture_output=True,
                            text=True, timeout=60)
    return result.returncode, result.stdout, result.stderr


def drop(d: Daemon, data_dir: Path, photos: tuple[str, ...] = PHOTOS,
         junk: dict[str, bytes] | None = None) -> None:
    for name in photos:
        shutil.copyfile(data_dir / "products" / name, d.inbox / f".{name}.part")
        (d.inbox / f".{name}.part").rename(d.inbox / name)
    for name, data in (junk or {}).items():
        (d.inbox / name).write_bytes(data)


def test_health_metrics_and_logs_of_a_working_daemon(make_daemon: Callable[..., Daemon],
                                                     data_dir: Path) -> None:
    d = make_daemon()
    d.start(OUTPUT_SIZE=400)
    d.wait_started()
    url = base_url(d)
    drop(d, data_dir, junk=JUNK)

    # /livez answers promptly while the workers are busy
    latencies = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        started = time.monotonic()
        assert get(url + "/livez")[0] == 200
        latencies.append(time.monotonic() - started)
        if len(list(d.output.glob("*.jpg"))) == 2 and len(list(d.failed.glob("*.erro.txt"))) == 2:
            break
        time.sleep(0.05)
    d.wait_idle(4)
    assert max(latencies) < 1.0, latencies

    # late events of the dropped files (closed after write) sit in the settle table until the
    # next settle check finds the files gone
    wait_for(lambda: sample(scrape(url), "thumbgen_queue_depth") == 0, 10,
             message="an empty queue")
    samples = scrape(url)
    for outcome, count in (("done", 2), ("rejected", 2), ("failed", 0)):
        assert sample(samples, "thumbgen_files_total", outcome=outcome) == count, outcome
    # why they were rejected: every reason is exported from the start, two of them counted once
    for reason in (*REJECT_KINDS, UNEXPECTED):
        expected = 1 if reason in ("not_a_photo", "damaged") else 0
        assert sample(samples, "thumbgen_failures_total", reason=reason) == expected, reason
    # the two photos pass each stage once; the junk is validated again while it may still be
    # an upload (every 1.5 s for 6 s with SETTLE_SECONDS 0.3), then rejected
    for stage, count in (("remove", 2), ("compose", 2), ("publish", 2)):
        assert sample(samples, "thumbgen_stage_seconds_count", stage=stage) == count, stage
        assert sample(samples, "thumbgen_stage_seconds_bucket", stage=stage, le="120.0") == count
    validated = sample(samples, "thumbgen_stage_seconds_count", stage="validate")
    assert 2 + 2 * 2 <= validated <= 2 + 2 * 8, validated
    assert sample(samples, "thumbgen_in_flight") == 0
    # which runtime runs the local model (LOCAL_RUNTIME=auto: onnxruntime fp32 without native bf16)
    (info,) = [dict(labels) for name, labels in samples if name == "thumbgen_build_info"]
    assert info["version"] == "0.1.0"
    if runtime.plan("auto").runtime == "onnxruntime":  # no native bf16 here, nothing to probe
        assert (info["runtime"], info["precision"]) == ("onnxruntime", "fp32")
    else:  # the probe decided
        assert (info["runtime"], info["precision"]) in (("onnxruntime", "fp32"),
                                                        ("openvino", "bf16"))
    assert sample(samples, "process_resident_memory_bytes") > 0
    assert sample(samples, "thumbgen_dependency_up", dependency="local_model") == 1

    status, doc = get_json(url + "/health")
    assert status == 200 and doc["status"] in ("healthy", "degraded")
    assert set(doc["checks"]) == {"application", "dependencies", "storage", "resources"}
    local_model = doc["checks"]["dependencies"]["local_model"]
    assert (local_model["runtime"], local_model["precision"]) == (info["runtime"],
                                                                  info["precision"])
    assert doc["uptime"] > 0 and doc["timestamp"].endswith("+00:00")
    application = doc["checks"]["application"]
    assert application["outcomes"]["done"] == 2 and application["outcomes"]["rejected"] == 2
    assert application["last_file_done"] in (*PHOTOS, *JUNK)
    assert doc["checks"]["dependencies"]["local_model"]["loaded"] is True
    assert get(url + "/readyz")[0] == 200

    code, out, _ = thumbgen_health(d)
    assert json.loads(out)["status"] in ("healthy", "degraded")
    assert code == {"healthy": 0, "degraded": 1}[json.loads(out)["status"]]

    assert d.stop() == 0
    assert not (d.inbox / ".thumbgen" / "http.json").exists()
    lines = [json.loads(line) for line in (d.base / "logs" / "app.log").read_text().splitlines()]
    summaries = {line["file"]: line for line in lines if "outcome" in line and "file" in line}
    assert {name: s["outcome"] for name, s in summaries.items()} == {
        "books.jpg": "done", "mugs.jpg": "done", "notes.jpg": "rejected", "scan.png": "rejected"}
    for name in PHOTOS:
        assert set(summaries[name]["stages"]) == {"validate", "remove", "compose", "publish"}
        assert summaries[name]["duration_ms"] > 0 and summaries[name]["backend"] == "local"


def test_not_ready_while_the_output_folder_is_unusable(daemon: Daemon) -> None:
    url = base_url(daemon)
    wait_for(lambda: get(url + "/readyz")[0] == 200, 30, message="/readyz 200 (start-up scan)")
    # tests may run as root, whom permissions do not stop: a file where the folder was does
    daemon.output.rename(daemon.base / "moved-away")
    daemon.output.write_text("not a folder")

    status, doc = get_json(url + "/readyz")
    assert status == 503
    assert doc["problems"] == [f"output folder {daemon.output}: not a folder"]
    status, doc = get_json(url + "/health")
    assert status == 503 and doc["status"] == "unhealthy"
    assert doc["checks"]["storage"]["folders"]["output"]["writable"] is False
    assert get(url + "/livez")[0] == 200  # nothing a restart would fix
    assert thumbgen_health(daemon)[0] == 2

    daemon.output.unlink()
    (daemon.base / "moved-away").rename(daemon.output)
    assert get(url + "/readyz")[0] == 200
    assert daemon.stop() == 0


def test_probes_answer_while_slow_clients_hold_connections(daemon: Daemon) -> None:
    """Issue 9: eight clients trickling header bytes made every probe answer 503 "busy" and
    Kubernetes restart a healthy pod."""
    url = base_url(daemon)
    wait_for(lambda: get(url + "/readyz")[0] == 200, 30, message="/readyz 200")
    port = int(url.rsplit(":", 1)[1])
    probes, slow = probe_while_trickling(url, port, ("/livez", "/readyz", "/health", "/metrics"))
    assert [p for p in probes if p.status != 200 or p.seconds > 0.5] == []
    closed = sorted(t.closed_after or -1 for t in slow)
    assert 4.5 <= closed[0] and closed[-1] <= 6.5, closed  # the 5 s header deadline
    assert daemon.stop() == 0


def test_systemd_notifications_and_the_watchdog(make_daemon: Callable[..., Daemon],
                                                data_dir: Path) -> None:
    d = make_daemon()
    listener = NotifyListener(d.base / "notify.sock")
    try:
        d.env.update(NOTIFY_SOCKET=str(listener.path), WATCHDOG_USEC="1000000")
        drop(d, data_dir, photos=("books.jpg", "mugs.jpg", "stickers.jpg"))
        d.start(SETTLE_SECONDS=60)  # the three photos stay queued: the scan is what READY waits for

        ready = wait_for(lambda: listener.first("READY"), 30, message=f"READY=1\n{d.log()}")
        assert ready["READY"] == "1"
        assert ready["STATUS"].startswith("ready: queue 3, in flight 0")

        # WATCHDOG_USEC=1 s: a ping every 0.5 s while alive
        since = time.monotonic()
        time.sleep(3)
        pings = listener.times("WATCHDOG", since)
        assert 4 <= len(pings) <= 8, pings
        assert max(b - a for a, b in zip(pings, pings[1:])) < 0.8

        # the inbox replaced by a file: the watcher's thread ends and cannot be restarted,
        # /livez fails and the pings stop (a removed inbox alone is recreated and watched again)
        url = base_url(d)
        shutil.rmtree(d.inbox)
        d.inbox.write_bytes(b"not a folder")
        status, doc = wait_for(lambda: (r := get_json(url + "/livez"))[0] == 503 and r, 10,
                               message="/livez 503")
        assert doc["problems"][0].startswith("the file watcher stopped")
        dead_since = time.monotonic()
        time.sleep(2)
        assert listener.times("WATCHDOG", dead_since + 0.1) == []
        assert any(status.startswith("STUCK") for status in listener.values("STATUS"))
        status, doc = get_json(url + "/health")
        assert status == 503 and doc["checks"]["application"]["watcher_alive"] is False

        d.send(signal.SIGTERM)
        wait_for(lambda: listener.first("STOPPING"), 30, message="STOPPING=1")
        assert d.wait_exit(30) == 0  # d.stop() would send the second SIGTERM that forces a stop
    finally:
        listener.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_remote_that_is_down_makes_the_daemon_degraded_not_dead(
        make_daemon: Callable[..., Daemon], data_dir: Path) -> None:
    d = make_daemon()
    d.start(REMOVAL_BACKEND="gradio", GRADIO_API_URL=f"http://127.0.0.1:{_closed_port()}",
            GRADIO_RETRY_ATTEMPTS=1, GRADIO_FALLBACK_ENABLED="true", OUTPUT_SIZE=400)
    d.wait_started()
    url = base_url(d)
    drop(d, data_dir, photos=("books.jpg",))
    d.wait_idle(1)  # the local model stood in

    status, doc = get_json(url + "/health")
    assert (status, doc["status"]) == (200, "degraded")
    remote = doc["checks"]["dependencies"]["remote"]
    assert remote["reachable"] is False
    assert remote["fallback_in_use"] is True
    assert get(url + "/livez")[0] == 200 and get(url + "/readyz")[0] == 200
    assert sample(scrape(url), "thumbgen_dependency_up", dependency="remote") == 0
    assert thumbgen_health(d)[0] == 1
    assert d.stop() == 0


def test_health_endpoints_can_be_switched_off(make_daemon: Callable[..., Daemon]) -> None:
    d = make_daemon()
    d.start(HEALTH_CHECK_ENABLED="false")
    d.wait_started()
    url = base_url(d)
    assert [get(url + path)[0] for path in ("/health", "/livez", "/readyz", "/metrics")] == [
        404, 404, 404, 200]
    code, _, err = thumbgen_health(d)
    assert code == 2 and "HEALTH_CHECK_ENABLED" in err
    assert d.stop() == 0
