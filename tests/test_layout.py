"""The package layout the architecture promises: what deploys, and which way imports point."""

from __future__ import annotations

import ast
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# Top-level packages the app itself must never import: diagnostics and the development stack.
NOT_FOR_THE_APP = ("doctor", "devstack", "tests", "bench")


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (lazy imports inside functions included)."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


def test_shared_and_the_function_app_import_neither_the_doctor_nor_the_development_stack() -> None:
    offenders = []
    for path in [REPO_ROOT / "function_app.py", *sorted((REPO_ROOT / "shared").rglob("*.py"))]:
        for module in imported_modules(path):
            if module.split(".")[0] in NOT_FOR_THE_APP:
                offenders.append(f"{path.relative_to(REPO_ROOT)} imports {module}")
    assert offenders == []


def test_the_check_sees_lazy_imports() -> None:
    """The scan must find an import inside a function, or the test above could never fail."""
    source = REPO_ROOT / "doctor" / "cli.py"
    assert any(module.startswith("doctor.") for module in imported_modules(source))


def test_the_doctor_is_deployed_and_the_development_stack_is_not() -> None:
    ignored = {line.strip().rstrip("/") for line in (REPO_ROOT / ".funcignore").read_text(encoding="utf-8").split()}
    assert "doctor" not in ignored
    assert "shared" not in ignored
    assert {"devstack", "tests", "bench"} <= ignored
    assert (REPO_ROOT / "doctor" / "__main__.py").is_file()
