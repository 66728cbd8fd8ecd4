"""What the upstream-suite plugins (fa_force_*.py) share: the line each writes at the end of the run, and
failing the run when the feature it forces on was never used (the plugin would then prove nothing).
Imported by its top-level name: tests/upstream/ is on the suites' PYTHONPATH (run_upstream.py)."""

from __future__ import annotations

import pytest


def report_use(session: pytest.Session, line: str, used: int, unused_line: str) -> None:
    """Write `line`; when `used` is 0 and tests ran, write `unused_line` and fail the run."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(line)
    else:
        print(line)
    if used == 0 and session.testscollected > 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if reporter is not None:
            reporter.write_line(unused_line)
