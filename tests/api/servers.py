"""Loopback servers for the transport tests: a JSON API (HTTP or HTTPS), a proxy, certificates.

Everything listens on 127.0.0.1 and records what it saw, so a test asserts what reached the
wire (which requests, through which proxy, on how many connections), not what the client says
it did. Certificates are made with the ``openssl`` command (the ``cryptography`` package is not
a dependency): a test CA and a server certificate it signs, or a self-signed one.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

PROJECTS_BODY = json.dumps({"data": {"projects": [{"id": 1}]}, "next_page_token": None}).encode()

HAVE_OPENSSL = shutil.which("openssl") is not None


# -- certificates -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


_EC = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


def self_signed(directory: Path, name: str, san: str) -> Certificate:
    """A self-signed server certificate for `san` (``IP:127.0.0.1``, ``DNS:host``)."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    _openssl(
        "req", "-x509", *_EC, "-days", "2", "-subj", f"/CN={name}",
        "-addext", f"subjectAltName={san}", "-keyout", str(key), "-out", str(cert),
    )  # fmt: skip
    return Certificate(cert, key)


def certificate_authority(directory: Path, name: str) -> Certificate:
    """A CA certificate and key, as a company CA that re-signs HTTPS would be."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    _openssl(
        "req", "-x509", *_EC, "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout", str(key), "-out", str(cert),
    )  # fmt: skip
    return Certificate(cert, key)


def issued_by(ca: Certificate, directory: Path, name: str, san: str) -> Certificate:
    """A server certificate for `san`, signed by `ca`."""
    cert, key, csr = (directory / f"{name}{ext}" for ext in (".pem", ".key", ".csr"))
    extensions = directory / f"{name}.ext"
    extensions.write_text(
        f"subjectAltName={san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
    )
    _openssl("req", "-new", *_EC, "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(csr))
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
        "-CAcreateserial", "-days", "2", "-extfile", str(extensions), "-out", str(cert),
    )  # fmt: skip
    return Certificate(cert, key)


# -- a JSON API -------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ApiServer

    def log_message(self, *args: object) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        self.server.opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.closed(self.connection)

    def do_GET(self) -> None:
        self.server.record(self.path, self.headers.get("Authorization"))
        time.sleep(self.server.delay)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(PROJECTS_BODY)))
        self.end_headers()
        self.wfile.write(PROJECTS_BODY)


class ApiServer(ThreadingHTTPServer):
    """Answers every GET with one page of projects; counts connections and requests.

    Attributes:
        paths: The request target of every GET, in arrival order.
        authorizations: The Authorization header of every GET.
        accepted: Connections accepted so far.
        delay: Seconds each GET waits before it is answered (0 unless a test sets it).
    """

    daemon_threads = True
    block_on_close = False

    def __init__(self, certificate: Certificate | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.context: ssl.SSLContext | None = None
        if certificate is not None:
            self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.context.load_cert_chain(certificate.cert, certificate.key)
        self.paths: list[str] = []
        self.authorizations: list[str | None] = []
        self.accepted = 0
        self.delay = 0.0
        self._open: set[int] = set()
        self._lock = threading.Condition()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def base_url(self) -> str:
        scheme = "https" if self.context else "http"
        return f"{scheme}://127.0.0.1:{self.server_address[1]}"

    def get_request(self) -> tuple[Any, Any]:
        sock, address = super().get_request()
        if self.context is None:
            return sock, address
        # The handshake runs in the handler thread, so a client that rejects the certificate
        # cannot stall the accept loop.
        return self.context.wrap_socket(
            sock, server_side=True, do_handshake_on_connect=False
        ), address

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client hanging up (on our certificate, say) is what some tests are about

    def opened(self, conn: socket.socket) -> None:
        with self._lock:
            self.accepted += 1
            self._open.add(id(conn))

    def closed(self, conn: socket.socket) -> None:
        with self._lock:
            self._open.discard(id(conn))
            self._lock.notify_all()

    def record(self, path: str, authorization: str | None) -> None:
        with self._lock:
            self.paths.append(path)
            self.authorizations.append(authorization)

    def open_connections(self) -> int:
        with self._lock:
            return len(self._open)

    def wait_until_all_closed(self, timeout: float = 10.0) -> int:
        """Wait (at most `timeout`) for the clients to close every connection; return how many
        are still open. A client that closes its sockets lets the handler threads see EOF at
        once, so the wait only lasts long when a test is about to fail."""
        with self._lock:
            self._lock.wait_for(lambda: not self._open, timeout)
            return len(self._open)

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


# -- a proxy --------------------------------------------------------------------------------


class LoopbackProxy:
    """An HTTP proxy on 127.0.0.1: forwards absolute-form requests and tunnels CONNECT.

    Attributes:
        requests: The request line of everything asked of it (``GET http://...``,
            ``CONNECT 127.0.0.1:443``), in arrival order.
        proxy_authorizations: The Proxy-Authorization header sent with each request line.
        tunnelled: Every byte the client sent through CONNECT tunnels.
    """

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.requests: list[str] = []
        self.proxy_authorizations: list[str | None] = []
        self.tunnelled = bytearray()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._sockets.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn, conn.makefile("rb") as reader:
                while True:
                    line = reader.readline()
                    if not line:
                        return
                    method, target, _ = line.decode("latin-1").split()
                    headers: list[tuple[str, str]] = []
                    while (field := reader.readline()) not in (b"\r\n", b"\n", b""):
                        name, _, value = field.decode("latin-1").partition(":")
                        headers.append((name.strip(), value.strip()))
                    auth = next((v for n, v in headers if n.lower() == "proxy-authorization"), None)
                    with self._lock:
                        self.requests.append(f"{method} {target}")
                        self.proxy_authorizations.append(auth)
                    if method == "CONNECT":
                        self._tunnel(conn, target)
                        return
                    self._forward(conn, method, target, headers)
        except OSError:
            return

    def _forward(
        self, conn: socket.socket, method: str, target: str, headers: list[tuple[str, str]]
    ) -> None:
        url = urlsplit(target)
        with socket.create_connection((url.hostname or "", url.port or 80)) as upstream:
            path = url.path + (f"?{url.query}" if url.query else "")
            head = [f"{method} {path} HTTP/1.1", "Connection: close"]
            head += [
                f"{n}: {v}"
                for n, v in headers
                if n.lower() not in ("connection", "proxy-authorization", "proxy-connection")
            ]
            upstream.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
            response = bytearray()
            while chunk := upstream.recv(65536):
                response += chunk
        status_and_headers, _, body = bytes(response).partition(b"\r\n\r\n")
        kept = [
            h
            for h in status_and_headers.split(b"\r\n")
            if not h.lower().startswith((b"connection:", b"content-length:"))
        ]
        kept.append(b"Content-Length: %d" % len(body))
        conn.sendall(b"\r\n".join(kept) + b"\r\n\r\n" + body)

    def _tunnel(self, conn: socket.socket, target: str) -> None:
        host, _, port = target.rpartition(":")
        upstream = socket.create_connection((host.strip("[]"), int(port)))
        with self._lock:
            self._sockets.append(upstream)
        conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        back = threading.Thread(target=self._pipe, args=(upstream, conn, None), daemon=True)
        back.start()
        self._pipe(conn, upstream, self.tunnelled)
        back.join()
        upstream.close()

    def _pipe(self, src: socket.socket, dst: socket.socket, sink: bytearray | None) -> None:
        try:
            while data := src.recv(65536):
                if sink is not None:
                    with self._lock:
                        sink.extend(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def stop(self) -> None:
        self._listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
