"""Run the project's benchmarks: ``python -m bench [name ...]`` (all of them by default).

Options after a single name go to that bench: ``python -m bench fastpath --only outage``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

# Each one starts its own private services, prints its figures as ratios against a baseline
# measured in the same run, and stops by itself.
BENCHES = {
    "functions": "message and persist functions alone (records/s) and takeover after a host dies",
    "persist": "sustained persist throughput into PostgreSQL",
    "history": "history page latency on a table of 1,000,000 messages",
    "realtime": "idle connections per gateway node, memory per connection, delivery latency",
    "sockets": "memory per idle Socket.IO socket on one gateway node vs bare python-socketio",
    "fastpath": "200 senders in 20 rooms over 2 nodes: max msg/s vs bare python-socketio, "
    "latency, CPU, a Kafka outage, an idle node",
    "cluster": "Redis Cluster: the cost of awaiting a replica per send, a primary's failover "
    "under load (stall, acked and lost)",
    "capacity": "per-unit costs for docs/capacity.md: CPU per delivery, Redis ops and bytes, "
    "Kafka bytes per message, PostgreSQL rows per core",
}


def main(argv: list[str] | None = None) -> int:
    """Run the chosen benchmarks one after another; the exit code is the first failure's."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="name", help=", ".join(BENCHES))
    known, extra = parser.parse_known_args(argv)
    names = known.names or list(BENCHES)
    if extra and len(names) != 1:
        parser.error("options go to one bench: name exactly one (python -m bench fastpath -h)")
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        parser.error(f"unknown bench {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
    failed = 0
    for i, name in enumerate(names, 1):
        print(f"\n== bench {i}/{len(names)}: {name} - {BENCHES[name]}", flush=True)
        started = time.monotonic()
        code = subprocess.call([sys.executable, "-m", f"bench.{name}", *extra])
        print(f"== {name}: exit {code} after {time.monotonic() - started:.0f}s", flush=True)
        failed = failed or code
    return failed


if __name__ == "__main__":
    sys.exit(main())
