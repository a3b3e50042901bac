"""`thumbgen diagnose`: one OK / WARN / FAIL line per check, each problem with what to do."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from watcher import config, diagnose, http
from watcher.diagnose import FAIL, OK, WARN, Finding


def _by_topic(findings: list[Finding], topic: str) -> list[Finding]:
    return [f for f in findings if f.topic == topic]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def gradio_like() -> Iterator[str]:
    """A local HTTP server answering /config like a Gradio app with a /png endpoint."""
    config_doc = {"version": "5.0.0", "dependencies": [{"api_name": "png"}, {"api_name": "text"}]}
    server = http.Server("127.0.0.1", 0, {"/config": lambda h: http.Response(
        200, json.dumps(config_doc).encode())})
    server.start()
    yield server.url
    server.stop()


def test_a_fresh_tree_with_the_model_has_no_failures(
        make_settings: Callable[..., config.Settings], model_path: Path,
        gradio_like: str) -> None:
    settings = make_settings(MODEL_PATH=model_path, GRADIO_API_URL=gradio_like)
    for folder in (settings.upload_path, settings.output_path, settings.background_path):
        folder.mkdir(parents=True)

    findings = diagnose.run(settings)

    assert [f for f in findings if f.level == FAIL] == []
    assert _by_topic(findings, "inbox")[0].level == OK
    # folders the daemon creates itself are fine
    processed = _by_topic(findings, "processed")[0]
    assert processed.level == OK and "created when first needed" in processed.text
    assert _by_topic(findings, "backgrounds")[0].level == WARN  # plain white, says what to do
    assert _by_topic(findings, "disk")[0].level in (OK, WARN)
    assert _by_topic(findings, "model")[0].level == OK
    remote = _by_topic(findings, "remote")[0]
    assert remote.level == OK and "endpoint /png" in remote.text
    assert all(f.action for f in findings if f.level != OK)


def test_problems_fail_with_what_to_do(make_settings: Callable[..., config.Settings],
                                       tmp_path: Path) -> None:
    settings = make_settings(REMOVAL_BACKEND="local", MODEL_PATH=tmp_path / "none.onnx",
                             GRADIO_API_URL="", WATCH_MODE="native")
    settings.upload_path.mkdir(parents=True)
    settings.output_path.write_text("a file where the output folder should be")

    findings = diagnose.run(settings)

    output = _by_topic(findings, "output")[0]
    assert output.level == FAIL and "not a folder" in output.text and output.action
    model = _by_topic(findings, "model")[0]
    assert model.level == FAIL and "thumbgen models fetch" in model.action
    assert _by_topic(findings, "remote")[0].level == OK  # none configured: local does it all


def test_a_filesystem_mounted_inside_the_inbox_fails(
        make_settings: Callable[..., config.Settings], model_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    settings = make_settings(MODEL_PATH=model_path, GRADIO_API_URL="")
    net = settings.upload_path / "loja-net"
    net.mkdir(parents=True)
    assert [f for f in diagnose.check_folders(settings) if "mounted inside the inbox" in f.text] == []
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(net)], check=True)
    try:
        findings = list(diagnose.check_folders(settings))
    finally:
        subprocess.run(["umount", "-l", str(net)], check=False)
    (finding,) = [f for f in findings if "mounted inside the inbox" in f.text]
    assert finding.level == FAIL and str(net) in finding.text and "(tmpfs)" in finding.text
    assert f"mount the share at the inbox itself ({settings.upload_path})" in finding.action


def test_an_unreachable_remote_fails_without_fallback_and_warns_with_it(
        make_settings: Callable[..., config.Settings]) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    without = make_settings(GRADIO_API_URL=url, GRADIO_FALLBACK_ENABLED="false")
    with_fallback = make_settings(GRADIO_API_URL=url, GRADIO_FALLBACK_ENABLED="true")

    (hard,) = diagnose.check_remote(without, timeout=2)
    (soft,) = diagnose.check_remote(with_fallback, timeout=2)

    assert hard.level == FAIL and "files wait" in hard.text
    assert soft.level == WARN and "local model stands in" in soft.text


def test_a_missing_endpoint_is_named(make_settings: Callable[..., config.Settings],
                                     gradio_like: str) -> None:
    (finding,) = diagnose.check_remote(make_settings(GRADIO_API_URL=gradio_like,
                                                     GRADIO_API_NAME="/image"))
    assert finding.level == WARN and "/png, /text" in finding.text
    assert "GRADIO_API_NAME" in finding.action


@pytest.mark.parametrize("form", ["http://user:Pw0rd-d@{host}/", "http://{host}/?token=Tk0-d"])
def test_a_url_with_a_password_or_token_is_checked_where_the_app_is_and_never_shown(
        make_settings: Callable[..., config.Settings], gradio_like: str, form: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # a proxy is for the outside world: a password before the host must not hide that the app
    # is on this machine, and /config is looked up under the path, before the query
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{_closed_port()}")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    settings = make_settings(GRADIO_API_URL=form.format(host=gradio_like.split("//")[1]
                                                        .rstrip("/")))

    (finding,) = _by_topic(diagnose.run(settings, timeout=2), "remote")

    assert finding.level == OK, finding
    assert "Pw0rd-d" not in finding.line() and "Tk0-d" not in finding.line()


def test_inotify_limits(make_settings: Callable[..., config.Settings], tmp_path: Path) -> None:
    settings = make_settings(WATCH_MODE="native")
    for n in range(5):
        (settings.upload_path / f"loja{n}").mkdir(parents=True)
    proc = tmp_path / "inotify"
    proc.mkdir()
    (proc / "max_user_watches").write_text("4\n")
    (proc / "max_queued_events").write_text("1024\n")

    watches, queued = diagnose.check_inotify(settings, proc)
    assert watches.level == FAIL and "6 folder(s)" in watches.text
    assert "max_user_watches" in watches.action
    assert queued.level == WARN and "max_queued_events" in queued.action
    auto = list(diagnose.check_inotify(make_settings(WATCH_MODE="auto"), proc))[0]
    assert auto.level == WARN and "poll instead" in auto.text
    assert list(diagnose.check_inotify(make_settings(WATCH_MODE="polling"), proc))[0].level == OK
    # this machine's real limits are readable; the watch mode and why are said (trial: they
    # were only in the log and `thumbgen config`)
    assert list(diagnose.check_inotify(settings))[0].level in (OK, WARN, FAIL)
    assert "watch mode native (WATCH_MODE=native)" in watches.text
    real_auto = list(diagnose.check_inotify(make_settings(WATCH_MODE="auto")))[0]
    assert "watch mode native (auto: filesystem " in real_auto.text
    polled = list(diagnose.check_inotify(make_settings(WATCH_MODE="polling"), proc))[0]
    assert "not used: polling every" in polled.text


def test_the_command_prints_lines_and_exits_1_on_failure(
        run_thumbgen: Callable[..., subprocess.CompletedProcess[str]],
        thumbgen_env: dict[str, str], model_path: Path) -> None:
    base = Path(thumbgen_env["THUMBGEN_BASE_PATH"])
    ok = run_thumbgen("diagnose", MODEL_PATH=model_path, REMOVAL_BACKEND="local")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.splitlines()[-1].startswith("0 failure(s)")
    assert all(line.split()[0] in ("OK", "WARN", "FAIL", "->") or line[0].isdigit()
               for line in ok.stdout.splitlines())

    shutil.rmtree(base)
    base.mkdir()
    (base / "thumbnails-prontas").write_text("x")
    bad = run_thumbgen("diagnose", MODEL_PATH=model_path, REMOVAL_BACKEND="local")
    assert bad.returncode == 1
    assert "FAIL  output" in bad.stdout


def test_a_misspelt_environment_setting_is_named_not_ignored_silently(
        run_thumbgen: Callable[..., subprocess.CompletedProcess[str]], model_path: Path) -> None:
    found = run_thumbgen("diagnose", MODEL_PATH=model_path, REMOVAL_BACKEND="local",
                         OUTPUT_SIZ="800")

    assert found.returncode == 0, found.stdout + found.stderr
    assert "WARN  config      THUMBGEN_OUTPUT_SIZ is set but is no setting" in found.stdout
    printed = run_thumbgen("config", OUTPUT_SIZ="800")
    assert "THUMBGEN_OUTPUT_SIZ is set but is no setting" in printed.stderr
