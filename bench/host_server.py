"""The local Functions host alone, serving the app, in a process of its own (`python -m bench.host_server`).

For the `peer` figure: the app on the local host exactly as `make run` serves it (devstack's
``build_host`` under uvicorn, one process), in the benchmark's local-development settings (connection
string, anonymous negotiate, signed events). Prints one JSON line with the port; serves until its
standard input closes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from bench.inprocess import SETTINGS


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.host_server")
    parser.add_argument("--port", type=int, default=0)
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.update(SETTINGS)

    import function_app
    from devstack.host import build_host
    from devstack.servers import ServerThread

    with ServerThread(build_host(function_app.app), port=arguments.port, name="functions") as server:
        print(json.dumps({"port": server.port}), flush=True)
        sys.stdin.read()
    return 0


if __name__ == "__main__":
    sys.exit(main())
