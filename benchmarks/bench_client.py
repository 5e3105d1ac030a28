"""Client throughput benchmark: fan_out page fetches at 1/4/16/64 in flight against a 20 ms server.

The server runs in a subprocess (the built-in simulator when importable, else a tiny threaded
loopback server defined here), so `time.process_time()` measures the client's CPU only.

    .venv/bin/python benchmarks/bench_client.py [--latency-ms 20] [--levels 1,4,16,64]
        [--transport urllib3|httpx]

Prints a markdown table: achieved requests/s against the latency bound `in_flight / latency`,
and client CPU per request.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import cycle, islice

from robofy_etl.api import ClientConfig, RobofyClient

API_KEY = "bench-key"


def _simulator_available() -> bool:
    try:
        import robofy_etl.simulator  # noqa: F401
    except Exception:
        return False
    return True


# -- the fallback server ------------------------------------------------------------------------

_PAGE = json.dumps(
    {
        "message": "Success",
        "data": {
            "messages": [
                {
                    "id": f"m{i}",
                    "role": "user" if i % 2 else "assistant",
                    "parts": [
                        {
                            "type": "text",
                            "text": "Hello, I would like to know more about pricing. " * 2,
                            "data": {"time": "2026-04-23 10:30:00", "context_id": f"c{i}"},
                        }
                    ],
                }
                for i in range(10)
            ],
            "next_page_token": None,
        },
    }
).encode()


def _serve(latency_s: float) -> None:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def do_GET(self) -> None:
            time.sleep(latency_s)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(_PAGE)))
            self.end_headers()
            self.wfile.write(_PAGE)

        def log_message(self, format: str, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 512

    server = Server(("127.0.0.1", 0), Handler)
    print(f"ROBOFY_BASE_URL=http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


# -- the benchmark --------------------------------------------------------------------------------


def _start_server(latency_ms: float, which: str) -> tuple[subprocess.Popen[str], str, str]:
    if which == "simulator" or (which == "auto" and _simulator_available()):
        command = [
            sys.executable,
            "-m",
            "robofy_etl.simulator",
            "--scale",
            "small",
            "--latency-ms",
            str(latency_ms),
            "--api-key",
            API_KEY,
        ]
        kind = "simulator (scale small)"
    else:
        command = [sys.executable, __file__, "--serve", "--latency-ms", str(latency_ms)]
        kind = "loopback fallback server"
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=os.environ.copy()
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if "ROBOFY_BASE_URL=" in line:
            # keep draining stdout so the server never blocks on a full pipe
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc, line.split("=", 1)[1].strip(), kind
    proc.kill()
    raise SystemExit("the benchmark server did not start")


def _tasks(api: RobofyClient, simulated: bool, wanted: int) -> list[tuple[str, str]]:
    if not simulated:
        return [("bench-bot", f"s{i}") for i in range(wanted)]
    pairs: list[tuple[str, str]] = []
    for project in api.iter_items("projects"):
        for chatbot in api.iter_items("chatbots", project_id=project["id"]):
            for session in api.iter_items("sessions", chatbot_id=chatbot["chatbot_id"]):
                pairs.append((chatbot["chatbot_id"], session["session_id"]))
                if len(pairs) >= wanted:
                    return pairs
    return pairs


def _first_page(api: RobofyClient, pair: tuple[str, str]) -> int:
    pages = api.paginate("transcript", chatbot_id=pair[0], session_id=pair[1])
    try:
        return len(next(pages).items)
    finally:
        pages.close()  # type: ignore[attr-defined]


def run(
    base_url: str,
    simulated: bool,
    latency_ms: float,
    levels: list[int],
    seconds: float,
    transport: str = "urllib3",
) -> str:
    """Measure each in-flight level; return the markdown table."""
    latency_s = latency_ms / 1000.0
    base = ClientConfig(base_url=base_url, api_key=API_KEY, http_transport=transport)  # type: ignore[arg-type]
    with RobofyClient(base) as api:
        pool = _tasks(api, simulated, 2000)
    rows = [
        "| in flight | requests | wall s | achieved req/s | bound req/s | % of bound "
        "| client CPU ms/req |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for level in levels:
        count = max(40, int(seconds * level / latency_s))
        config = replace(base, max_in_flight=level)
        with RobofyClient(config) as api:
            warm = list(islice(cycle(pool), level * 2))
            for _ in api.fan_out(warm, lambda p: _first_page(api, p)):
                pass
            tasks = list(islice(cycle(pool), count))
            cpu0, wall0 = time.process_time(), time.perf_counter()
            done = sum(1 for _ in api.fan_out(tasks, lambda p: _first_page(api, p)))
            wall = time.perf_counter() - wall0
            cpu = time.process_time() - cpu0
            assert done == count
            assert api.total_stats().errors == 0
        achieved = count / wall
        bound = level / latency_s
        rows.append(
            f"| {level} | {count} | {wall:.2f} | {achieved:.0f} | {bound:.0f} | "
            f"{100 * achieved / bound:.0f}% | {1000 * cpu / count:.2f} |"
        )
    return "\n".join(rows)


def main() -> None:
    """Parse arguments, start the server subprocess, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--levels", default="1,4,16,64")
    parser.add_argument("--seconds", type=float, default=2.0, help="target duration per level")
    parser.add_argument("--server", choices=["auto", "simulator", "fallback"], default="auto")
    parser.add_argument(
        "--transport",
        default="urllib3",
        help="the client's http_transport (default: urllib3, the client's default)",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _serve(args.latency_ms / 1000.0)
        return
    proc, base_url, kind = _start_server(args.latency_ms, args.server)
    try:
        levels = [int(x) for x in args.levels.split(",")]
        table = run(
            base_url,
            kind.startswith("simulator"),
            args.latency_ms,
            levels,
            args.seconds,
            args.transport,
        )
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    cpus = os.cpu_count()
    print(
        f"Server: {kind}, {args.latency_ms:g} ms latency, in a subprocess; {cpus} CPUs; "
        f"transport {args.transport}\n"
    )
    print(table)


if __name__ == "__main__":
    main()
