"""Logging: flat JSON lines in app.log, console colour only on a TTY, journald fields, secrets."""

from __future__ import annotations

import gzip
import json
import os
import pty
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from watcher import logging as log_setup

TOKEN = "hf_AbCdEfGhIjKlMnOpQrStUv"


@pytest.fixture(autouse=True)
def _restore_loguru() -> Iterator[None]:
    yield
    logger.remove()
    logger.configure(patcher=None, extra={})
    logger.add(sys.stderr)


def _summary_line(**extra: Any) -> None:
    """What the worker logs once per file (watcher/worker.py ``_record``)."""
    logger.bind(file="loja/camisa.jpg", outcome="done", duration_ms=812,
                stages={"validate": 12.5, "remove": 700.1, "compose": 80.0, "publish": 19.4},
                backend="local", **extra).info("done loja/camisa.jpg in 812 ms")


def _read_json_lines(log_dir: Path) -> list[dict[str, Any]]:
    logger.complete()  # the file sink writes from its own thread
    lines = (log_dir / "app.log").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_file_lines_are_flat_json_with_the_bound_fields(tmp_path: Path) -> None:
    log_setup.setup("info", tmp_path)

    _summary_line()
    try:
        raise ValueError("bad pixel")
    except ValueError:
        logger.bind(file="x.png", stage="validate").exception("unexpected error")

    summary, error = _read_json_lines(tmp_path)
    assert summary["message"] == "done loja/camisa.jpg in 812 ms"
    assert summary["level"] == "INFO"
    assert summary["time"].endswith("+00:00")
    assert (summary["file"], summary["outcome"], summary["duration_ms"], summary["backend"]) == (
        "loja/camisa.jpg", "done", 812, "local")
    assert summary["stages"] == {"validate": 12.5, "remove": 700.1, "compose": 80.0,
                                 "publish": 19.4}
    assert not any(key.startswith("_") for key in summary)
    assert error["level"] == "ERROR" and error["stage"] == "validate"
    assert "ValueError: bad pixel" in error["exception"]


def test_the_file_rotates_into_gzipped_archives(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(log_setup, "ROTATION", "2 KB")  # 50 MB in production
    log_setup.setup("info", tmp_path)
    for n in range(40):
        _summary_line(n=n)
    logger.complete()

    archives = sorted(tmp_path.glob("app.*.log.gz"))
    assert archives, sorted(p.name for p in tmp_path.iterdir())
    assert (tmp_path / "app.log").stat().st_size < 4096
    with gzip.open(archives[0], "rt") as archived:
        assert json.loads(archived.readline())["n"] == 0


def test_log_level_is_honoured(tmp_path: Path) -> None:
    log_setup.setup("warning", tmp_path)
    logger.info("not written")
    logger.warning("written")
    assert [line["message"] for line in _read_json_lines(tmp_path)] == ["written"]


def test_secrets_are_masked_in_messages_fields_and_tracebacks(tmp_path: Path) -> None:
    secret = "s3cret-value-42"
    log_setup.setup("debug", tmp_path, secrets=[secret])

    logger.info("token {} and url https://bob:pa55word@example.test/x", secret)
    logger.bind(file="a.jpg", detail={"header": f"Authorization: Bearer {TOKEN}"}).info("call")
    try:
        raise RuntimeError(f"rejected token={secret}")
    except RuntimeError:
        logger.exception("remote failed")

    logger.complete()
    text = (tmp_path / "app.log").read_text()
    assert secret not in text and TOKEN not in text and "pa55word" not in text
    first, second, third = _read_json_lines(tmp_path)
    assert first["message"] == "token **** and url https://****@example.test/x"
    assert second["detail"] == {"header": "Authorization: Bearer ****"}
    assert "RuntimeError: rejected token=****" in third["exception"]


def test_ordinary_words_are_not_masked() -> None:
    redact = log_setup.Redactor(["abcd1234"])
    text = "token verification passed; password reset page; bearer of news"
    assert redact.text(text) == text


def test_the_console_masks_tracebacks_too(capsys: pytest.CaptureFixture[str]) -> None:
    secret = "s3cret-value-42"
    log_setup.setup("info", secrets=[secret])

    try:
        raise RuntimeError(f"{secret} from http://:Tk7x9q2w@example.test/png?sig=Zz81ab")
    except RuntimeError:
        logger.exception("remote failed")

    err = capsys.readouterr().err
    assert "remote failed" in err and "RuntimeError: **** from http://****@example.test" in err
    assert "Traceback (most recent call last)" in err
    assert secret not in err and "Tk7x9q2w" not in err and "Zz81ab" not in err


def _run_with_stderr(code: str, stderr: int) -> None:
    subprocess.run([sys.executable, "-c", code], stderr=stderr, check=True, timeout=60)


LOG_ONE_LINE = textwrap.dedent("""
    from loguru import logger
    from watcher import logging as log_setup
    log_setup.setup("info", env={})
    logger.info("hello")
""")


def test_console_is_coloured_on_a_tty_and_plain_otherwise(tmp_path: Path) -> None:
    controller, terminal = pty.openpty()
    try:
        _run_with_stderr(LOG_ONE_LINE, terminal)
        coloured = os.read(controller, 65536).decode()
    finally:
        os.close(controller)
        os.close(terminal)
    with (tmp_path / "plain.txt").open("wb") as plain:
        _run_with_stderr(LOG_ONE_LINE, plain.fileno())
    plain_text = (tmp_path / "plain.txt").read_text()

    assert "hello" in coloured and "\x1b[" in coloured
    assert "hello" in plain_text and "\x1b[" not in plain_text


def test_under_journald_compares_journal_stream_with_stderr(tmp_path: Path) -> None:
    with (tmp_path / "stream").open("w") as stream:
        st = os.fstat(stream.fileno())
        assert log_setup.under_journald({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, stream)
        # inherited by a child whose stderr went elsewhere: not the journal
        assert not log_setup.under_journald({"JOURNAL_STREAM": f"{st.st_dev}:1"}, stream)
        assert not log_setup.under_journald({}, stream)
        assert not log_setup.under_journald({"JOURNAL_STREAM": "garbage"}, stream)


@pytest.mark.parametrize(("key", "field"), [("file", "FILE"), ("duration_ms", "DURATION_MS"),
                                            ("stage", "STAGE"), ("x-y", "X_Y"),
                                            ("_private", "PRIVATE"), ("9lives", None)])
def test_journal_field_names(key: str, field: str | None) -> None:
    assert log_setup.journal_field(key) == field


def test_journal_sink_sends_structured_fields_instead_of_console_lines(
        capsys: pytest.CaptureFixture[str]) -> None:
    sent: list[tuple[str, dict[str, Any]]] = []
    log_setup.setup("info", secrets=[TOKEN],
                    journal_send=lambda message, **fields: sent.append((message, fields)))

    _summary_line(stage="publish")
    logger.bind(file=f"with {TOKEN}").warning("rejected")

    (message, fields), (_, second) = sent
    assert message == "done loja/camisa.jpg in 812 ms"
    assert fields["FILE"] == "loja/camisa.jpg"
    assert (fields["OUTCOME"], fields["DURATION_MS"], fields["STAGE"]) == ("done", 812, "publish")
    assert json.loads(fields["STAGES"])["remove"] == 700.1
    assert (fields["PRIORITY"], fields["SYSLOG_IDENTIFIER"]) == (6, "thumbgen")
    assert fields["CODE_FUNC"] == "_summary_line"
    assert second["PRIORITY"] == 4 and second["FILE"] == "with ****"
    assert capsys.readouterr().err == ""


# The real thing: systemd-python's journal.send into a datagram socket at journald's path, in a
# private mount namespace (a tmpfs over /run), parsed with the journal's native protocol.
JOURNAL_CHILD = textwrap.dedent("""
    import json, os, socket, struct, sys
    os.makedirs("/run/systemd/journal")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind("/run/systemd/journal/socket")
    st = os.fstat(2)
    os.environ["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
    from loguru import logger
    from watcher import logging as log_setup
    log_setup.setup("info")
    logger.bind(file="loja/camisa.jpg", stage="remove", outcome="rejected", duration_ms=41,
                stages={"validate": 3.0}).warning("loja/camisa.jpg rejected")
    data, fields = server.recv(65536), {}
    while data:
        head, sep, rest = data.partition(b"\\n")
        if b"=" in head:
            key, value = head.split(b"=", 1)
            data = rest
        else:  # binary-safe form: KEY\\n, 64-bit little-endian length, value, \\n
            (size,) = struct.unpack("<Q", rest[:8])
            key, value, data = head, rest[8:8 + size], rest[9 + size:]
        fields[key.decode()] = value.decode()
    print(json.dumps(fields))
""")


def test_journald_receives_native_entries_with_the_fields(tmp_path: Path) -> None:
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare(1) for a private /run")
    probe = subprocess.run([unshare, "--mount", "--propagation", "private", "true"],
                           capture_output=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"no mount namespaces here: {probe.stderr.decode().strip()}")
    script = tmp_path / "child.py"
    script.write_text(JOURNAL_CHILD)
    result = subprocess.run(
        [unshare, "--mount", "--propagation", "private", "sh", "-c",
         f'mount -t tmpfs tmpfs /run && exec "{sys.executable}" "{script}"'],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr

    fields = json.loads(result.stdout)
    assert fields["MESSAGE"] == "loja/camisa.jpg rejected"
    assert (fields["FILE"], fields["STAGE"], fields["OUTCOME"], fields["DURATION_MS"]) == (
        "loja/camisa.jpg", "remove", "rejected", "41")
    assert (fields["PRIORITY"], fields["SYSLOG_IDENTIFIER"]) == ("4", "thumbgen")
    assert json.loads(fields["STAGES"]) == {"validate": 3.0}
    assert result.stderr == ""  # journald took the line: nothing on the console
