"""The product as `make run` starts it, for end-to-end tests: local Functions host and local Web PubSub service."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

from devstack.__main__ import RunningStack, parse_arguments, start_stack
from shared.runtime import reset_runtime


@contextlib.contextmanager
def running_stack(directory: Path, **values: str) -> Iterator[RunningStack]:
    """The stack on free ports with local.settings.json.example's settings, `values` added to its Values.

    The process environment is restored when the stack stops (the stack writes its settings there),
    so a stack of wider scope than one test leaks no setting into later tests.
    """
    saved = dict(os.environ)
    document = json.loads(Path("local.settings.json.example").read_text())
    document["Values"].update(values)
    settings = directory / "local.settings.json"
    settings.write_text(json.dumps(document, indent=2))
    # The stack puts the file's values into the environment, as Core Tools does; a stack a module-scoped
    # fixture starts must not leave them behind for the modules after it (the environment wins there).
    saved = dict(os.environ)
    running = start_stack(
        parse_arguments(["--settings", str(settings), "--port", "0", "--webpubsub-port", "0"]), out=lambda _: None
    )
    try:
        yield running
    finally:
        running.stop()
        os.environ.clear()
        os.environ.update(saved)
        reset_runtime()
        with warnings.catch_warnings():  # websocket-client leaves server-closed sockets to the collector
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
