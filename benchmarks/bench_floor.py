"""Benchmark: the floor under a full sync on this machine, whatever the pipeline does.

Two measurements that no pipeline code can go below:

1. The fetch: the simulator in its own process at the benchmark's latency, and a minimal client
   (raw keep-alive sockets, one per thread, no parsing beyond the headers) sending transcript GETs
   from as many threads as requests in flight. Its cycle time per request, times the requests of
   a full sync divided by the in-flight cap, is the shortest the fetch can take.
2. The start: a fresh interpreter importing Dagster and creating the ephemeral instance a run
   needs, plus the pipeline's own modules. A Dagster run cannot start before these.

    .venv/bin/python benchmarks/bench_floor.py [--requests 9708] [--latency-ms 20] [--in-flight 16]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime
from multiprocessing.connection import Connection

_START = """
import time
t0 = time.perf_counter()
import dagster
t1 = time.perf_counter()
dagster.DagsterInstance.ephemeral()
t2 = time.perf_counter()
import robofy_etl.defs.assembly, robofy_etl.sync
t3 = time.perf_counter()
print(t1 - t0, t2 - t1, t3 - t2)
"""


def _simulator(conn: Connection, latency_ms: float) -> None:
    from robofy_etl.simulator import SimulatorConfig, serve

    end = datetime(2026, 11, 23)
    config = SimulatorConfig(scale="small", seed=1, end=end, latency_ms=latency_ms)
    with serve(config) as sim:
        session = sim.dataset.sessions[0]
        conn.send((sim.base_url, sim.api_key, session.chatbot_id, session.session_id))
        conn.recv()


def _fetch_cycle_ms(base_url: str, head: bytes, threads: int, per_thread: int) -> float:
    host, port = base_url.split("//")[1].split(":")

    def worker() -> None:
        with socket.create_connection((host, int(port))) as sock, sock.makefile("rb") as reader:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for _ in range(per_thread):
                sock.sendall(head)
                reader.readline()
                length = 0
                while (line := reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                reader.read(length)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    started = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return 1000 * (time.perf_counter() - started) / per_thread


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=9708, help="requests of a full sync")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--in-flight", type=int, default=16)
    parser.add_argument("--per-thread", type=int, default=200)
    args = parser.parse_args()

    parent, child = mp.Pipe()
    sim = mp.Process(target=_simulator, args=(child, args.latency_ms))
    sim.start()
    try:
        base_url, api_key, chatbot_id, session_id = parent.recv()
        host = base_url.split("//")[1]
        head = (
            f"GET /v1/ai-agent/inbox/chats/{chatbot_id}/{session_id} HTTP/1.1\r\n"
            f"Host: {host}\r\nAuthorization: Bearer {api_key}\r\n\r\n"
        ).encode()
        cycle = _fetch_cycle_ms(base_url, head, args.in_flight, args.per_thread)
    finally:
        parent.send("stop")
        sim.join(timeout=30)

    starts = []
    for _ in range(3):
        out = subprocess.run(
            [sys.executable, "-c", _START], capture_output=True, text=True, check=True
        ).stdout
        starts.append([float(x) for x in out.split()])
    dagster_import, instance, ours = (min(s[i] for s in starts) for i in range(3))

    bound = args.requests * args.latency_ms / 1000 / args.in_flight
    fetch = args.requests * cycle / 1000 / args.in_flight
    start = dagster_import + instance + ours
    print(f"latency {args.latency_ms:g} ms, {args.in_flight} in flight, {args.requests} requests")
    print(f"latency bound R x L / C:                      {bound:5.2f} s")
    print(f"minimal client cycle per request:             {cycle:5.2f} ms")
    print(f"fetch floor (R x cycle / C):                  {fetch:5.2f} s")
    print(
        f"start floor (import dagster {dagster_import:.2f} s, ephemeral instance "
        f"{instance:.2f} s, pipeline modules {ours:.2f} s): {start:5.2f} s"
    )
    print(f"floor of a full sync before any loading or SQL: {fetch + start:5.2f} s")


if __name__ == "__main__":
    main()
