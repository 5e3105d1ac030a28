"""The HTTP side of the simulator: a threaded HTTP/1.1 keep-alive server, the ``Simulator``
control object, ``serve()`` and the ``python -m robofy_etl.simulator`` entry point."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote

from robofy_etl.simulator.app import (
    App,
    Response,
    State,
    Variants,
    full_sync_requests,
    full_sync_targets,
)
from robofy_etl.simulator.dataset import SCALES, Dataset, new_world
from robofy_etl.simulator.faults import FaultInjector, Faults
from robofy_etl.simulator.glitches import Glitch, GlitchRequest

__all__ = ["RequestLogEntry", "Simulator", "SimulatorConfig", "main", "serve"]

logger = logging.getLogger(__name__)

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
_FAULT_BODIES = {
    "429": (429, "Too Many Requests", "RATE_LIMITED", "Too many requests, slow down."),
    "500": (500, "Internal Server Error", "INTERNAL_SERVER_ERROR", "Unexpected error."),
    "502": (502, "Bad Gateway", "BAD_GATEWAY", "Upstream error."),
    "503": (503, "Service Unavailable", "SERVICE_UNAVAILABLE", "Try again later."),
    "504": (504, "Gateway Timeout", "GATEWAY_TIMEOUT", "Upstream timed out."),
}


@dataclass(frozen=True)
class SimulatorConfig:
    """How to build and serve a simulated account.

    Attributes:
        scale: ``tiny`` | ``small`` | ``medium`` | ``large`` (see ``SCALES``).
        seed: dataset seed.
        end: the clock's start value (naive UTC); data covers ``[end - days, end)``.
            None: the current UTC time floored to the hour.
        days: window length; None: the scale's default.
        api_key: the key clients must send.
        latency_ms: added to every response (slept in the handler thread, no lock held).
        faults: fault injection and schema drift (all off by default).
        variants: response shapes (documented defaults).
        host, port: where to listen; port 0 picks a free port.
        stats_lag_hours: message stats only count activity older than ``now - stats_lag``.
    """

    scale: str = "tiny"
    seed: int = 1
    end: datetime | None = None
    days: int | None = None
    api_key: str = "sim-secret-key"
    latency_ms: float = 0.0
    faults: Faults = field(default_factory=Faults)
    variants: Variants = field(default_factory=Variants)
    host: str = "127.0.0.1"
    port: int = 0
    stats_lag_hours: float = 2.0


@dataclass(frozen=True, slots=True)
class RequestLogEntry:
    """One served request. ``status`` is 0 when the connection was reset without a response."""

    method: str
    path: str
    query: dict[str, str]
    status: int
    fault: str | None
    endpoint: str


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # never wait for idle keep-alive connections on shutdown
    request_queue_size = 512
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], simulator: Simulator) -> None:
        self.simulator = simulator
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def close_connections(self) -> None:
        with self.connections_lock:
            conns = list(self.connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    """A lean HTTP/1.1 handler: one read of the request head, one ``sendall`` per response."""

    protocol_version = "HTTP/1.1"
    server_version = "robofy-simulator"
    timeout = 120  # idle keep-alive connections are closed after this many seconds
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def handle_one_request(self) -> None:
        try:
            line = self.rfile.readline(65537)
        except OSError:
            self.close_connection = True
            return
        if not line:
            self.close_connection = True
            return
        parts = line.decode("latin-1").split()
        headers: dict[str, str] = {}
        while True:
            h = self.rfile.readline(65537)
            if h in (b"\r\n", b"\n", b""):
                break
            name, _, value = h.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            self._write(400, b'{"message":"Bad Request"}', (), close=True)
            return
        method, target, version = parts
        conn_header = headers.get("connection", "").lower()
        close = conn_header == "close" or (version == "HTTP/1.0" and conn_header != "keep-alive")
        length = headers.get("content-length")
        if length:
            self.rfile.read(int(length))  # discard a body (only non-GETs send one)
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            close = True  # we do not parse chunked bodies: answer, then drop the connection
        self.close_connection = close
        self.server.simulator._serve_one(self, method, target, headers, close)

    def _write(
        self, status: int, body: bytes, headers: tuple[tuple[str, str], ...], close: bool
    ) -> None:
        head = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            "Server: robofy-simulator",
        ]
        head.extend(f"{k}: {v}" for k, v in headers)
        if close:
            head.append("Connection: close")
            self.close_connection = True
        try:
            self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        except OSError:
            self.close_connection = True

    def reset(self) -> None:
        """Abort the connection with a TCP RST and no response."""
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True


class Simulator:
    """A simulated Robofy API; use ``serve(cfg)`` or ``with Simulator(cfg) as sim``."""

    def __init__(
        self, config: SimulatorConfig | None = None, *, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        """``sleep`` waits out the latency and slow faults in handler threads (tests inject one)."""
        self.config = cfg = config or SimulatorConfig()
        if cfg.scale not in SCALES:
            raise ValueError(f"unknown scale {cfg.scale!r}; choose one of {', '.join(SCALES)}")
        self.api_key = cfg.api_key
        self._lock = threading.Lock()  # guards clock/state changes and the log
        self._world = new_world(cfg.scale, cfg.seed, cfg.end, cfg.days)
        self._stats_lag = timedelta(hours=cfg.stats_lag_hours)
        self._now: datetime = self._world.start + timedelta(days=cfg.days or SCALES[cfg.scale].days)
        self._latency_s = cfg.latency_ms / 1000.0
        self._sleep = sleep
        self._variants = cfg.variants
        self._faults = cfg.faults
        self._injector = FaultInjector(cfg.faults)
        self._glitch: Glitch | None = None
        self._log: list[RequestLogEntry] = []
        self._counters: Counter[str] = Counter()
        self._cpu_ns = 0
        self.app = App(self._new_state(Dataset(self._world, self._now, self._stats_lag)))
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> Simulator:
        """Bind and serve in a background thread."""
        if self._server is not None:
            return self
        self._server = _Server((self.config.host, self.config.port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="robofy-simulator",
            daemon=True,
        )
        self._thread.start()
        logger.info("Robofy simulator serving %s (scale=%s)", self.base_url, self.config.scale)
        return self

    def stop(self) -> None:
        """Stop serving and drop open connections (returns promptly)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        logger.info("Robofy simulator stopped")

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- properties ----------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the simulator is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def now(self) -> datetime:
        return self._now

    @property
    def dataset(self) -> Dataset:
        """Ground truth at the current clock."""
        return self.app.state.dataset

    @property
    def request_log(self) -> list[RequestLogEntry]:
        with self._lock:
            return list(self._log)

    def counters(self) -> dict[str, int]:
        """Requests served per endpoint name (all statuses)."""
        with self._lock:
            return dict(self._counters)

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()
            self._counters.clear()
            self._cpu_ns = 0

    def cpu_seconds(self) -> float:
        """Handler CPU time spent on requests since the last ``clear_log`` (sleeps excluded)."""
        return self._cpu_ns / 1e9

    def expected_full_sync_requests(self) -> dict[str, int]:
        """Requests per endpoint of a full sync at the current clock (default variants)."""
        return full_sync_requests(self.dataset)

    def warm(self) -> int:
        """Render every page of a full sync into the response cache now (not during a timed run);
        returns the number of pages. The cache lasts until the clock, variants or faults change."""
        state = self.app.state
        headers = {"authorization": f"Bearer {self.api_key}", "api-key": self.api_key}
        targets = full_sync_targets(state.dataset, state.variants)
        for _, target in targets:
            self.app.handle("GET", target, headers)
        return len(targets)

    # -- control -------------------------------------------------------------------------------
    def set_faults(self, faults: Faults) -> None:
        with self._lock:
            self._faults = faults
            self._injector = FaultInjector(faults)
            self._refresh()

    def set_variants(self, variants: Variants) -> None:
        with self._lock:
            self._variants = variants
            self._refresh()

    def set_glitch(self, glitch: Glitch | None) -> None:
        """Serve quietly wrong responses through ``glitch`` (see ``glitches.py``); None: clean."""
        self._glitch = glitch

    def set_latency(self, ms: float) -> None:
        self._latency_s = ms / 1000.0

    def advance(self, hours: float = 24.0) -> Dataset:
        """Move the clock forward, revealing the activity planned in ``[old_now, new_now)``."""
        if hours < 0:
            raise ValueError("the clock only moves forward")
        with self._lock:
            self._now = self._now + timedelta(hours=hours)
            self._refresh(Dataset(self._world, self._now, self._stats_lag))
            return self.app.state.dataset

    def delete_chatbot(self, chatbot_id: str) -> None:
        """Make a chatbot (and everything under it) vanish from the API."""
        with self._lock:
            self._world.deleted_chatbots.add(chatbot_id)
            self._refresh(Dataset(self._world, self._now, self._stats_lag))

    def delete_project(self, project_id: int) -> None:
        """Make a project and its chatbots vanish from the API."""
        with self._lock:
            self._world.deleted_projects.add(int(project_id))
            self._refresh(Dataset(self._world, self._now, self._stats_lag))

    def _new_state(self, dataset: Dataset) -> State:
        return State(dataset, self._variants, self._faults, self.api_key)

    def _refresh(self, dataset: Dataset | None = None) -> None:
        self.app.state = self._new_state(dataset or self.app.state.dataset)

    # -- serving -------------------------------------------------------------------------------
    def _serve_one(
        self, handler: _Handler, method: str, target: str, headers: dict[str, str], close: bool
    ) -> None:
        t0 = time.thread_time_ns()
        try:
            response = self.app.handle(method, target, headers)
        except Exception:
            logger.exception("simulator failed on %s %s", method, target)
            response = Response(
                500, b'{"message":"Internal Server Error","error":{"code":"INTERNAL_SERVER_ERROR",'
                b'"detail":"Simulator bug."}}', "unknown"
            )  # fmt: skip
        path, _, query_string = target.partition("?")
        glitch = self._glitch
        if glitch is not None:
            response = _glitched(glitch, response, path, query_string)
        fault = self._injector.decide(target) if response.status == 200 else None
        status = response.status
        body, extra = response.body, response.headers
        if fault in _FAULT_BODIES:
            status, message, code, detail = _FAULT_BODIES[fault]
            body = (
                f'{{"message":"{message}","error":{{"code":"{code}","detail":"{detail}"}}}}'
            ).encode()
            extra = (
                (("Retry-After", self._faults.retry_after_header),)
                if fault in ("429", "503")
                else ()
            )
        elif fault == "malformed":
            body = body[: max(1, len(body) // 2)]
        elif fault == "reset":
            status = 0
        entry = RequestLogEntry(
            method, path, dict(parse_qsl(query_string)), status, fault, response.endpoint
        )
        with self._lock:
            self._log.append(entry)
            self._counters[response.endpoint] += 1
            self._cpu_ns += time.thread_time_ns() - t0
        if self._latency_s > 0:
            self._sleep(self._latency_s)
        if fault == "reset":
            handler.reset()
            return
        if fault == "slow":
            self._sleep(self._faults.slow_s)
        handler._write(status, body, extra, close)


def _glitched(glitch: Glitch, response: Response, path: str, query_string: str) -> Response:
    request = GlitchRequest(
        response.endpoint,
        "/".join(unquote(part) for part in path.split("/")),
        dict(parse_qsl(query_string)),
        response.status,
    )
    out = glitch(request, json.loads(response.body))
    if out is None:
        return response
    status, body = out
    return Response(status, json.dumps(body).encode(), response.endpoint)


@contextlib.contextmanager
def serve(
    config: SimulatorConfig | None = None, *, sleep: Callable[[float], None] = time.sleep
) -> Iterator[Simulator]:
    """Serve a simulated Robofy API on loopback for the duration of the ``with`` block."""
    simulator = Simulator(config, sleep=sleep)
    simulator.start()
    try:
        yield simulator
    finally:
        simulator.stop()


# --------------------------------------------------------------------------------------------
# Command line


def _parse_end(value: str) -> datetime:
    end = datetime.fromisoformat(value)
    if end.tzinfo is not None:
        raise argparse.ArgumentTypeError("--end must be naive UTC (no offset)")
    return end


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m robofy_etl.simulator",
        description="Serve the built-in Robofy API simulator until SIGINT/SIGTERM.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8787, help="0 picks a free port")
    p.add_argument("--scale", choices=list(SCALES), default="medium")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--end", type=_parse_end, default=None, help="clock start, naive UTC ISO date/time"
    )
    p.add_argument("--days", type=int, default=None)
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--api-key", default="sim-secret-key")
    p.add_argument("--stats-lag-hours", type=float, default=2.0)
    p.add_argument("--fault-429", type=float, default=0.0, metavar="RATE")
    p.add_argument("--fault-5xx", type=float, default=0.0, metavar="RATE")
    p.add_argument("--fault-reset", type=float, default=0.0, metavar="RATE")
    p.add_argument("--fault-slow", type=float, default=0.0, metavar="RATE")
    p.add_argument("--fault-malformed", type=float, default=0.0, metavar="RATE")
    p.add_argument("--slow-s", type=float, default=3.0)
    p.add_argument("--retry-after-s", type=float, default=1.0)
    p.add_argument("--fault-seed", type=int, default=0)
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a response-shape variant for every endpoint, e.g. envelope=data.array, keys=camel",
    )
    return p


def config_from_args(argv: list[str] | None = None) -> SimulatorConfig:
    """Parse command-line arguments into a ``SimulatorConfig``."""
    args = _parser().parse_args(argv)
    variant_kwargs: dict[str, Any] = {}
    for item in args.variant:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--variant expects NAME=VALUE, got {item!r}")
        variant_kwargs[name.strip()] = value.strip()
    return SimulatorConfig(
        scale=args.scale,
        seed=args.seed,
        end=args.end,
        days=args.days,
        api_key=args.api_key,
        latency_ms=args.latency_ms,
        faults=Faults(
            rate_429=args.fault_429,
            rate_5xx=args.fault_5xx,
            rate_reset=args.fault_reset,
            rate_slow=args.fault_slow,
            rate_malformed=args.fault_malformed,
            slow_s=args.slow_s,
            retry_after_s=args.retry_after_s,
            seed=args.fault_seed,
        ),
        variants=Variants(**variant_kwargs),
        host=args.host,
        port=args.port,
        stats_lag_hours=args.stats_lag_hours,
    )


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGINT/SIGTERM; print the base URL and the API key first."""
    config = config_from_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        started = time.perf_counter()
        with serve(config) as sim:
            summary = sim.dataset.summary()
            print(f"Robofy simulator ({config.scale}, seed {config.seed}) at {sim.base_url}")  # noqa: T201
            print(f"  ROBOFY_BASE_URL={sim.base_url}")  # noqa: T201
            print(f"  ROBOFY_API_KEY={sim.api_key}")  # noqa: T201
            print(  # noqa: T201
                f"  clock {sim.now.isoformat()}  sessions {summary['sessions']}  "
                f"messages {summary['messages']}  leads {summary['leads']}  "
                f"(generated in {time.perf_counter() - started:.2f}s)",
                flush=True,
            )
            while not stop.wait(0.5):
                pass
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0
