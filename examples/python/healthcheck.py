"""Waits until eventflow servers are healthy (grpc.health.v1: overall "" and each service name).

    python examples/python/healthcheck.py [--timeout 30] ADDR=SERVICE_NAME ...
    e.g. 127.0.0.1:50051=eventflow.v1.PublisherService

Exits 0 when all are SERVING, 1 (with the reason on stderr) otherwise. Used by scripts/run-local.sh.
"""

from __future__ import annotations

import argparse
import sys

import efclient


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each server")
    parser.add_argument("targets", nargs="+", metavar="ADDR=SERVICE")
    args = parser.parse_args()
    for target in args.targets:
        addr, _, service = target.partition("=")
        try:
            efclient.wait_serving(addr, ("", service) if service else ("",), timeout=args.timeout)
        except (TimeoutError, RuntimeError) as err:
            print(f"healthcheck: {err}", file=sys.stderr)
            return 1
        print(f"healthcheck: {addr} {service or '(overall)'} SERVING")
    return 0


if __name__ == "__main__":
    sys.exit(main())
