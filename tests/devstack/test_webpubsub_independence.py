"""The local Web PubSub service stands apart from the app it serves.

It is an independent implementation of the Azure side: if it imported the app's protocol code,
a bug there could hide behind a stand-in that shares it. The launcher and the local host may use
the app; ``devstack/webpubsub`` and what it imports from ``devstack`` may not.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SERVICE = Path("devstack/webpubsub")
APP_MODULES = ("shared", "function_app")


def imported_modules(path: Path) -> set[str]:
    """Every absolute module a file imports, at the top or inside functions; relative ones resolved."""
    package = ".".join(path.with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                found.add(f"{base}.{node.module}" if node.module else base)
            else:
                found.add(node.module or "")
    return found


def is_app_module(name: str) -> bool:
    return any(name == app or name.startswith(app + ".") for app in APP_MODULES)


def service_files() -> list[Path]:
    """The service's own files and the devstack modules they import (the server helper)."""
    files = sorted(SERVICE.rglob("*.py"))
    seen = set(files)
    for path in list(files):
        for name in imported_modules(path):
            candidate = Path(*name.split(".")).with_suffix(".py")
            if name.startswith("devstack.") and candidate.is_file() and candidate not in seen:
                seen.add(candidate)
                files.append(candidate)
    return files


@pytest.mark.parametrize("path", service_files(), ids=str)
def test_the_local_service_imports_nothing_from_the_app(path: Path) -> None:
    assert not {name for name in imported_modules(path) if is_app_module(name)}


def test_the_scan_sees_imports_inside_functions_and_relative_ones(tmp_path: Path) -> None:
    """The control: the scan would notice an app import written either way."""
    module = tmp_path / "probe.py"
    module.write_text("def later():\n    from shared.config import load_settings\n    import function_app\n")
    assert {name for name in imported_modules(module) if is_app_module(name)} == {"shared.config", "function_app"}


def test_running_the_service_loads_no_app_module() -> None:
    """Also what is imported at run time, through any third module: a fresh interpreter tells."""
    probe = (
        "import sys, devstack.webpubsub, devstack.webpubsub.__main__\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {APP_MODULES!r}))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.strip() == "[]"
