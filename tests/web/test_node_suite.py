"""The JS unit tests (tests/web/*.test.mjs: protocol.js on the golden fixtures, playout.js) under
node's built-in runner, so that `make test` runs them too."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_node_suite() -> None:
    node = shutil.which("node")
    if node is None:
        if os.environ.get("TALKER_SKIP_BROWSER") == "1":
            pytest.skip("node is missing and TALKER_SKIP_BROWSER=1")
        pytest.fail("node is missing: `make setup` installs it (scripts/setup_system.sh); "
                    "or set TALKER_SKIP_BROWSER=1 to skip the browser and node tests")
    files = sorted(str(p) for p in (ROOT / "tests" / "web").glob("*.test.mjs"))
    assert len(files) >= 2, f"expected tests/web/*.test.mjs, found {files}"
    out = subprocess.run([node, "--test", *files], capture_output=True, text=True, timeout=120,
                         cwd=ROOT)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "# fail 0" in out.stdout, out.stdout[-2000:]
