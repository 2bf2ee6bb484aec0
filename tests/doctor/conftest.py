"""Every doctor test starts in an empty directory (no local.settings.json) with none of the app's settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.settings import clear_app_settings


@pytest.fixture(autouse=True)
def _no_configuration(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    clear_app_settings(monkeypatch)
