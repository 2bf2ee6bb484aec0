"""Concurrent callers: the same call made from several threads at once, for tests of shared waits."""

from __future__ import annotations

import threading
from collections.abc import Callable


def run_concurrently(call: Callable[[], None], callers: int, timeout: float = 60.0) -> None:
    """Start `callers` threads running `call` together and wait for all of them (at most `timeout` each)."""
    threads = [threading.Thread(target=call) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
        assert not thread.is_alive(), "a concurrent caller did not finish"
