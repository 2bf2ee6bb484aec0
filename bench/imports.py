"""Cold import of `function_app` against `import azure.functions` alone, in fresh interpreters.

What the Functions worker pays when it indexes the app on a cold start. Each sample is one new
`python` process timing one import statement (interpreter start-up excluded); the two kinds run
alternately, after one warm-up each so that bytecode caches exist, as they do in a deployment.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from bench.measure import Figure, milliseconds

TARGET = 1.3
ROOT = Path(__file__).resolve().parent.parent
# Modules whose presence after `import function_app` would mean an SDK loaded eagerly.
HEAVY_MODULES = ("azure.core", "azure.identity", "azure.keyvault", "azure.messaging", "jwt", "requests", "msal")
PROBE = """
import json, sys, time
started = time.perf_counter()
import {module}
elapsed = time.perf_counter() - started
heavy = sorted(name for name in {heavy!r} if name in sys.modules)
print(json.dumps({{"seconds": elapsed, "heavy": heavy}}))
"""


def _sample(module: str) -> tuple[float, list[str]]:
    """Seconds the import took, and the heavy modules it loaded."""
    code = PROBE.format(module=module, heavy=HEAVY_MODULES)
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    environment.pop("PYTHONDONTWRITEBYTECODE", None)
    completed = subprocess.run(  # noqa: S603 - our own interpreter with our own code
        [sys.executable, "-c", code], cwd=ROOT, env=environment, capture_output=True, text=True, check=True
    )
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    return float(result["seconds"]), [str(name) for name in result["heavy"]]


def import_figure(*, rounds: int) -> Figure:
    _sample("azure.functions")
    _sample("function_app")
    app: list[float] = []
    base: list[float] = []
    ratios: list[float] = []
    heavy: set[str] = set()
    for round_number in range(rounds):
        order = ("function_app", "azure.functions") if round_number % 2 else ("azure.functions", "function_app")
        samples = {module: _sample(module) for module in order}
        app_seconds, loaded = samples["function_app"]
        base_seconds, _ = samples["azure.functions"]
        app.append(app_seconds)
        base.append(base_seconds)
        ratios.append(app_seconds / base_seconds)
        heavy.update(loaded)
    ratio = statistics.median(ratios)
    return Figure(
        "import",
        f"{ratio:.2f}x",
        f"<= {TARGET}x",
        ratio <= TARGET,
        (
            f"import function_app {milliseconds(statistics.median(app))}, "
            f"import azure.functions {milliseconds(statistics.median(base))} "
            f"(medians of {rounds} fresh processes each, alternating)",
            "SDKs loaded by the import: " + (", ".join(sorted(heavy)) or "none"),
        ),
    )
