"""The local stack for the `stack` figure, in a process of its own (`python -m bench.stack_server`).

Starts the local Functions host and the local Web PubSub service exactly as `make run` does
(devstack's `start_stack`), on free ports, with the given groups permitted; prints one JSON line
with the negotiate URL; serves until its standard input closes. Running apart from the clients
keeps their work off the servers' interpreter lock, as real clients would be.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

from devstack.__main__ import freeze_startup_objects, parse_arguments, start_stack

DEFAULT_KEY = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH"  # the official emulator's public key


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stack_server")
    parser.add_argument("--groups", required=True, help="NEGOTIATE_GROUPS for the app")
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    values = {
        "WEBPUBSUB_CREDENTIAL": "connectionstring",
        # The port is replaced with the free one the service gets (--webpubsub-port 0).
        "WEBPUBSUB_CONNECTION_STRING": f"Endpoint=http://localhost:8080;AccessKey={DEFAULT_KEY};Version=1.0;",
        "NEGOTIATE_AUTH": "anonymous",
        "NEGOTIATE_GROUPS": arguments.groups,
    }
    with tempfile.TemporaryDirectory() as folder:
        settings = Path(folder) / "local.settings.json"
        settings.write_text(json.dumps({"IsEncrypted": False, "Values": values}))
        for name in values:
            os.environ.pop(name, None)
        stack = start_stack(
            parse_arguments(["--settings", str(settings), "--port", "0", "--webpubsub-port", "0"]),
            out=lambda line: None,
        )
        freeze_startup_objects()
        try:
            print(json.dumps({"negotiate": stack.url("negotiate")}), flush=True)
            sys.stdin.read()
        finally:
            stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
