"""``python -m simulators [--host H] [--port 8900] [--config file.toml]``: run all four vendors."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from simulators.app import VENDORS, load_config
from simulators.server import serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulators", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900)
    parser.add_argument("--config", help="a TOML file (see simulators/README.md)")
    parser.add_argument("--quiet", action="store_true", help="no access log")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config) if args.config else None
        server = serve(args.host, args.port, config, quiet=args.quiet)
    except (OSError, ValueError) as exc:
        print(f"simulators: {exc}", file=sys.stderr)
        return 2
    sim = server.app.extensions["simulators"]
    print(f"simulators: {server.url}  vendors {', '.join(sorted(VENDORS))}; control API {server.url}/_sim/ "
          f"(seed {sim.seed})", file=sys.stderr, flush=True)
    done = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: done.set())
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
