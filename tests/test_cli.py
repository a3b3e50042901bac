"""The command line as a user runs it: ``thumbgen config`` and ``thumbgen run`` with bad values."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
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


# -- folders the daemon cannot create: exit 2 and one line, never a traceback ---------------------

def _wrapped(mechanism: str, place: Path) -> tuple[list[str], str]:
    """A command prefix that makes ``place`` a folder nothing can be created in, for real, and the
    OS's reason it gives. Root ignores permission bits, so: a file where a folder should be, a
    read-only tmpfs mounted over it (a private mount namespace), or a folder of another user
    with the daemon stripped of root's right to override permissions."""
    if mechanism == "a file in the way":
        place.rmdir()
        place.write_text("not a folder\n")
        return [], "Not a directory"
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs or drop capabilities")
    if mechanism == "read-only mount":
        unshare = shutil.which("unshare")
        probe = subprocess.run([unshare or "unshare", "--mount", "true"], capture_output=True,
                               check=False) if unshare else None
        if probe is None or probe.returncode != 0:
            pytest.skip("no unshare(1) or no mount namespaces here")
        script = f'mount -t tmpfs -o ro tmpfs "{place}" && exec "$0" "$@"'
        return [unshare, "--mount", "--propagation", "private", "sh", "-c", script], \
            "Read-only file system"
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("no setpriv(1)")
    os.chown(place, 12345, 12345)
    place.chmod(0o755)
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search"], "Permission denied"


def _refused_start(prefix: list[str], thumbgen_env: dict[str, str], **settings: str) -> str:
    """``thumbgen run`` under ``prefix`` with ``settings``: it must exit 2 without a traceback;
    its last line on stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("THUMBGEN_")}
    env.update(thumbgen_env, THUMBGEN_REMOVAL_BACKEND="local", THUMBGEN_HTTP_PORT="0")
    env.update({f"THUMBGEN_{key}": value for key, value in settings.items()})
    thumbgen = str(Path(sys.executable).with_name("thumbgen"))
    result = subprocess.run([*prefix, thumbgen, "run"], env=env, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("mechanism", ["a file in the way", "read-only mount", "another user's"])
@pytest.mark.parametrize("key", ["LOG_PATH", "UPLOAD_PATH", "OUTPUT_PATH"])
def test_run_exits_2_naming_a_folder_it_cannot_create(thumbgen_env: dict[str, str],
                                                      tmp_path: Path, key: str,
                                                      mechanism: str) -> None:
    place = tmp_path / "place"
    place.mkdir()
    prefix, why = _wrapped(mechanism, place)
    folder = place / "folder"

    line = _refused_start(prefix, thumbgen_env, **{key: str(folder)})

    assert line.startswith(f"thumbgen: cannot create the folder {folder}"), line
    assert f"({key}): {why}; " in line
    assert f"or set {key} to a folder the daemon can write" in line
    advice = {"a file in the way": f"{place} is a file, not a folder: move it away",
              "read-only mount": f"{place} is on a read-only filesystem: mount a writable folder",
              "another user's": f"the daemon runs as uid 0: give it {place} (`chown -R 0:0 {place}`"}
    assert advice[mechanism] in line


def test_run_exits_2_naming_a_log_folder_that_is_there_but_not_its_own(
        thumbgen_env: dict[str, str], tmp_path: Path) -> None:
    # the docs' own set-up with the chown forgotten: logs/ exists and belongs to someone else
    logs = tmp_path / "logs"
    logs.mkdir()
    prefix, why = _wrapped("another user's", logs)

    line = _refused_start(prefix, thumbgen_env, LOG_PATH=str(logs))

    assert line.startswith(f"thumbgen: cannot write in the folder {logs} (LOG_PATH): {why}; "), line
    assert f"give it {logs} (`chown -R 0:0 {logs}`" in line
