"""stilts taplint and votlint against a live server: zero errors (E- lines)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from vo_support import LiveVO, live_vo  # noqa: F401

pytestmark = pytest.mark.skipif(
    shutil.which("stilts") is None, reason="needs Debian's stilts (apt-get install stilts)"
)


def test_taplint_reports_no_errors(live_vo: LiveVO) -> None:  # noqa: F811
    result = subprocess.run(
        ["stilts", "taplint", f"tapurl={live_vo.url}/tap", "report=EW", "maxrepeat=3"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = result.stdout
    print(report)
    errors = [line for line in report.splitlines() if line.startswith("E-")]
    assert not errors, "\n".join(errors)
