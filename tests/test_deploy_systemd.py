"""deploy/systemd: the unit passes systemd's own checks, and the env example is a valid config."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from watcher import config

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "systemd"
UNIT = DEPLOY / "thumbgen.service"
ENV_EXAMPLE = DEPLOY / "thumbgen.env.example"
MAX_EXPOSURE = 2.0


def parse_unit(text: str) -> dict[tuple[str, str], list[str]]:
    """(section, key) → every value, in order; systemd allows a key more than once."""
    values: dict[tuple[str, str], list[str]] = defaultdict(list)
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        values[(section, key.strip())].append(value.strip())
    return values


def parse_env_file(text: str) -> dict[str, str]:
    """KEY=value lines as systemd's EnvironmentFile= reads them (comments, optional quotes)."""
    env = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        env[key.strip()] = value
    return env


def _seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|sec|min|m)?", value)
    assert match, value
    return float(match.group(1)) * (60 if match.group(2) in ("min", "m") else 1)


@pytest.fixture(scope="module")
def unit() -> dict[tuple[str, str], list[str]]:
    return parse_unit(UNIT.read_text())


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return parse_env_file(ENV_EXAMPLE.read_text())


def _one(unit: dict[tuple[str, str], list[str]], section: str, key: str) -> str:
    assert (section, key) in unit, f"{key}= missing from [{section}]"
    return unit[(section, key)][-1]


def test_the_unit_is_a_notify_service_with_a_watchdog(
        unit: dict[tuple[str, str], list[str]]) -> None:
    assert _one(unit, "Service", "Type") == "notify"
    assert _one(unit, "Service", "NotifyAccess") == "main"
    assert _seconds(_one(unit, "Service", "WatchdogSec")) >= 10
    assert _one(unit, "Service", "Restart") == "on-failure"
    assert _one(unit, "Unit", "StartLimitIntervalSec") and _one(unit, "Unit", "StartLimitBurst")
    assert ("Service", "StartLimitBurst") not in unit  # [Service] is the old, ignored place
    assert _one(unit, "Service", "User") not in ("", "root")
    assert _one(unit, "Service", "EnvironmentFile").endswith("thumbgen.env")
    assert _one(unit, "Service", "MemoryMax")


def test_the_unit_is_hardened(unit: dict[tuple[str, str], list[str]]) -> None:
    expected = {"ProtectSystem": "strict", "NoNewPrivileges": "true", "PrivateTmp": "true",
                "ProtectHome": "true", "CapabilityBoundingSet": ""}
    for key, value in expected.items():
        assert _one(unit, "Service", key) == value, key
    assert "@system-service" in unit[("Service", "SystemCallFilter")]


def test_the_env_example_is_a_valid_configuration_that_fits_the_unit(
        unit: dict[tuple[str, str], list[str]], env_example: dict[str, str],
        tmp_path: Path) -> None:
    known = {option.env_name for option in config.OPTIONS}
    assert set(env_example) <= known, set(env_example) - known
    no_file = tmp_path / "empty.toml"  # only the env file counts, not a config/ in the cwd
    no_file.touch()
    settings = config.load(no_file, env=env_example)

    # stop waits longer than the daemon's own warm shutdown
    assert _seconds(_one(unit, "Service", "TimeoutStopSec")) > settings.shutdown_timeout + 5
    # the daemon may write exactly where it has to, and reads the backgrounds
    writable = {Path(p) for p in " ".join(unit[("Service", "ReadWritePaths")]).split()}
    assert writable == {settings.upload_path, settings.output_path, settings.log_path,
                        settings.backup_path}
    assert Path(_one(unit, "Service", "ReadOnlyPaths")) == settings.background_path
    assert Path(_one(unit, "Service", "WorkingDirectory")) == settings.base_path
    state_dir = Path("/var/lib") / _one(unit, "Service", "StateDirectory")
    assert settings.model_path.parent == state_dir


@pytest.fixture(scope="module")
def systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.fail("systemd-analyze is missing: `make syspkgs` installs Debian's systemd package")
    return tool


def _testable_copy(tmp_path: Path, text: str | None = None) -> Path:
    """The unit with ExecStart= pointing at this venv's thumbgen: verify checks that it exists."""
    real = Path(sys.executable).with_name("thumbgen")
    assert real.exists()
    unit = tmp_path / "thumbgen.service"
    unit.write_text((text or UNIT.read_text()).replace("/opt/thumbgen/venv/bin/thumbgen",
                                                       str(real)))
    return unit


def test_systemd_analyze_verify_says_nothing(systemd_analyze: str, tmp_path: Path) -> None:
    result = subprocess.run([systemd_analyze, "verify", str(_testable_copy(tmp_path))],
                            capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_systemd_analyze_verify_would_catch_a_mistake(systemd_analyze: str,
                                                      tmp_path: Path) -> None:
    broken = UNIT.read_text().replace("ProtectSystem=strict", "ProtectSystm=strict")
    result = subprocess.run([systemd_analyze, "verify", str(_testable_copy(tmp_path, broken))],
                            capture_output=True, text=True, timeout=120)
    assert "ProtectSystm" in result.stderr  # exit code 0 all the same: hence "no output at all"


def test_security_exposure_is_low(systemd_analyze: str, tmp_path: Path) -> None:
    result = subprocess.run([systemd_analyze, "security", "--offline=true",
                             str(_testable_copy(tmp_path))],
                            capture_output=True, text=True, timeout=120)
    match = re.search(r"Overall exposure level for thumbgen\.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout
