"""The chat page's JavaScript (web/): its own unit tests pass, and the committed bundle is current.

`shared/client/app.js` is committed so that `func azure functionapp publish` works from a fresh
clone without Node. The price is this check: rebuilding from `web/src` with the locked packages
must give the committed bytes, or the deployed page would not be the reviewed source.
Both tests need Node and `npm ci --prefix web` (part of installing the project).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "web"
CLIENT = ROOT / "shared" / "client"
BUILT_FILES = ("app.js", "THIRD_PARTY_NOTICES.txt")


def node() -> str:
    executable = shutil.which("node")
    if executable is None:
        pytest.fail("Node.js is not installed; the chat page is built and tested with it (Node 20 or later).")
    if not (WEB / "node_modules" / "@azure" / "web-pubsub-client").is_dir():
        pytest.fail("web/node_modules is missing: run `npm ci --prefix web`.")
    return executable


def test_committed_bundle_is_built_from_the_current_source(tmp_path: Path) -> None:
    result = subprocess.run(
        [node(), "build.mjs", str(tmp_path)], cwd=WEB, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    for name in BUILT_FILES:
        assert (tmp_path / name).read_bytes() == (CLIENT / name).read_bytes(), (
            f"shared/client/{name} is out of date: run `npm run build --prefix web` and commit the result."
        )


def test_javascript_unit_tests_pass() -> None:
    result = subprocess.run(
        [node(), "--test", "test/"], cwd=WEB, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "# fail 0" in result.stdout
