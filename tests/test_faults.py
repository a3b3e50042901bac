"""Faults of the setup: reported once, cleared by their own check, named by the folder at fault."""

from __future__ import annotations

import errno
from pathlib import Path

from loguru import logger

from watcher.faults import Faults, folder_of, is_setup_error, probe_write


def test_a_fault_is_logged_once_and_cleared_when_its_check_passes() -> None:
    lines: list[str] = []
    sink = logger.add(lines.append, format="{message}")
    try:
        faults, broken = Faults(), {"still": True}

        def check() -> str | None:
            return "still broken" if broken["still"] else None

        assert faults.report("model", "the model is missing", "fetch it", check)
        assert not faults.report("model", "the model is missing", "fetch it", check)
        assert faults and [f.key for f in faults.active()] == ["model"]
        assert faults.recheck() == 1 and faults
        broken["still"] = False
        assert faults.recheck() == 0 and not faults
    finally:
        logger.remove(sink)
    assert sum("the model is missing; fetch it" in line for line in lines) == 1
    assert sum("fixed after" in line for line in lines) == 1


def test_a_check_that_raises_keeps_the_fault() -> None:
    faults = Faults()

    def check() -> str | None:
        raise OSError("still no")

    faults.report("x", "x is wrong", "fix x", check)
    assert faults.recheck() == 1


def test_setup_errors_and_the_folder_they_name(tmp_path: Path) -> None:
    root = tmp_path / "out"
    nested = root / "loja" / ".a.jpg.tmp"
    assert is_setup_error(PermissionError(errno.EACCES, "denied"))
    assert is_setup_error(OSError(errno.EROFS, "read-only"))
    assert not is_setup_error(OSError(errno.ENOSPC, "full"))
    assert not is_setup_error(ValueError("no"))
    assert folder_of(PermissionError(errno.EACCES, "denied", str(nested)), root) == root / "loja"
    # a path outside the folder (or none) names the folder itself
    assert folder_of(PermissionError(errno.EACCES, "denied", "/etc/x"), root) == root
    assert folder_of(PermissionError(errno.EACCES, "denied"), root) == root


def test_folder_fault_checks_the_folder_itself(tmp_path: Path) -> None:
    faults = Faults()
    folder = tmp_path / "gone"
    faults.folder(folder, "output", "Permission denied")
    (fault,) = faults.active()
    assert str(folder) in fault.problem and "writable" in fault.fix
    assert faults.recheck() == 1  # still missing
    folder.mkdir()
    assert probe_write(folder) is None
    assert faults.recheck() == 0
