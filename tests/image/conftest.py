"""The image tests (``make test-image``) must never pass by not running.

``make test`` leaves them out (``-m "not image"`` in pyproject's addopts); ``make test-image``
selects them with ``-m image``. pytest exits 5 when that selects nothing; this also fails such a
run when any image test was skipped: a missing engine or image is a failure, never a skip.
"""

from __future__ import annotations

import pytest


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    markexpr = session.config.getoption("markexpr") or ""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if ("not image" in markexpr or "image" not in markexpr or reporter is None
            or session.config.option.collectonly):
        return  # not an image run (`make test` loads this file too)
    ran = [r for key in ("passed", "failed") for r in reporter.stats.get(key, [])
           if r.when == "call"]
    skipped = reporter.stats.get("skipped", [])
    if exitstatus == 0 and (skipped or not ran):
        reporter.write_line(f"image tests: {len(ran)} ran, {len(skipped)} skipped; "
                            "every one must run", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
