"""The command line as a user runs it: ``thumbgen config`` and ``thumbgen run`` with bad values."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from watcher import config

Run = Callable[..., subprocess.CompletedProcess[str]]
TOKEN = "hf_SecretSecretSecret123"


def test_config_prints_every_key_with_the_token_masked(run_thumbgen: Run) -> None:
    result = run_thumbgen("config", GRADIO_TOKEN=TOKEN, WORKERS=3)

    assert result.returncode == 0, result.stderr
    assert TOKEN not in result.stdout + result.stderr
    assert "SecretSecret" not in result.stdout
    keys, _, plan = result.stdout.partition("\n\n")
    lines = {line.split()[0]: line for line in keys.splitlines() if line.strip()}
    assert set(lines) == set(config.option_names())
    assert "output default: 1200×1200 JPEG q90, background folder, product fills 85%" in plan
    assert "****" in lines["GRADIO_TOKEN"]
    assert lines["WORKERS"].split()[1] == "3"
    assert "env THUMBGEN_WORKERS" in lines["WORKERS"]
    assert lines["REMOVAL_BACKEND"].endswith("# default, used: local")  # auto, no remote set


@pytest.mark.parametrize("where", ["before the command", "after the command"])
def test_config_reads_the_file_given(run_thumbgen: Run, tmp_path: Path, where: str) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(f"gradio_token = '{TOKEN}'\noutput_size = '1200x900'\n")

    args = (["--config", str(path), "config"] if where == "before the command"
            else ["config", "--config", str(path)])
    result = run_thumbgen(*args)

    assert result.returncode == 0, result.stderr
    assert TOKEN not in result.stdout
    assert any(line.split()[:2] == ["OUTPUT_SIZE", "1200x900"]
               for line in result.stdout.splitlines())


@pytest.mark.parametrize(("key", "value"), [
    ("WORKERS", "lots"),
    ("OUTPUT_SIZE", "1200x"),
    ("BACKUP_SCHEDULE", "61 3 * * *"),
    ("OUTPUT_PATH", "produtos/out"),
    ("REMOTE_MAX_SIDE", "100"),
])
def test_run_with_a_bad_value_exits_2_naming_the_key(run_thumbgen: Run, key: str,
                                                     value: str) -> None:
    result = run_thumbgen("run", **{key: value})

    assert result.returncode == 2
    assert key in result.stderr
    assert value in result.stderr
    assert "Traceback" not in result.stderr


def test_run_with_a_bad_config_file_exits_2(run_thumbgen: Run, tmp_path: Path) -> None:
    path = tmp_path / "typo.toml"
    path.write_text("workres = 2\n")

    result = run_thumbgen("--config", str(path), "run")

    assert result.returncode == 2
    assert "WORKRES" in result.stderr
    missing = run_thumbgen("--config", str(tmp_path / "gone.toml"), "run")
    assert missing.returncode == 2
    assert "gone.toml" in missing.stderr


def test_a_bad_token_value_is_not_printed_either(run_thumbgen: Run, tmp_path: Path) -> None:
    # a bad value beside a token: the error names the key, and the token appears nowhere
    result = run_thumbgen("run", GRADIO_TOKEN=TOKEN, REMOVAL_BACKEND="nope")

    assert result.returncode == 2
    assert "REMOVAL_BACKEND" in result.stderr
    assert TOKEN not in result.stderr + result.stdout
