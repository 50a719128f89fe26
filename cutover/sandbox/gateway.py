"""A real local gateway: an ALB stand-in in mTLS *passthrough* mode in front of N gateway tasks.

front  HTTPS on 127.0.0.1 with real TLS; asks for a client certificate (optional), strips any
       X-Amzn-Mtls-* header a client sent (so a forged header is never trusted) and forwards the
       verified peer certificate, URL-encoded PEM, in X-Amzn-Mtls-Clientcert, as the ALB does.
       Round-robin over the registered tasks.
task   plain HTTP on loopback. Reads the gateway config parameter once, when it starts (like an
       ECS task resolving its `secrets`), and enforces tls.mtls.meshWritesEnforcement on the
       mesh-write routes: strict answers 403 without a valid client cert; advisory serves and
       logs an `mtls-advisory` warning. Every request becomes a JSON access-log line in the log
       group, shipped in small batches as the awslogs driver would.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import queue
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote, unquote

from cryptography import x509

from cutover.mtls import RUN_HEADER, read_mode
from cutover.sandbox.pki import Pki, verify_client_pem

CERT_HEADER = "X-Amzn-Mtls-Clientcert"


class LogShipper:
    """Batches log lines into CloudWatch Logs (moto), one stream per task, like awslogs."""

    def __init__(self, logs_client: Any, group: str, interval: float = 0.25) -> None:
        self.client, self.group, self.interval = logs_client, group, interval
        self.queue: queue.Queue[tuple[str, int, str]] = queue.Queue()
        self._streams: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sandbox-log-shipper", daemon=True)
        self._thread.start()

    def emit(self, stream: str, message: str, ts_ms: int | None = None) -> None:
        self.queue.put((stream, ts_ms if ts_ms is not None else int(time.time() * 1000), message))

    def put_now(self, stream: str, events: list[tuple[int, str]]) -> None:
        if stream not in self._streams:
            with contextlib.suppress(self.client.exceptions.ResourceAlreadyExistsException):
                self.client.create_log_stream(logGroupName=self.group, logStreamName=stream)
            self._streams.add(stream)
        events = sorted(events)
        for i in range(0, len(events), 5000):
            self.client.put_log_events(logGroupName=self.group, logStreamName=stream,
                                       logEvents=[{"timestamp": t, "message": m} for t, m in events[i:i + 5000]])

    def flush(self) -> None:
        batch: dict[str, list[tuple[int, str]]] = {}
        while True:
            try:
                stream, ts, msg = self.queue.get_nowait()
            except queue.Empty:
                break
            batch.setdefault(stream, []).append((ts, msg))
        for stream, events in batch.items():
            self.put_now(stream, events)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.flush()
            except Exception:  # the moto server is going away at shutdown; nothing to ship to
                if self._stop.is_set():
                    return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with contextlib.suppress(Exception):
            self.flush()


@dataclass
class GatewaySettings:
    routes: tuple[str, ...]
    api_keys: dict[str, str]          # bearer token -> caller name
    read_parameter: Callable[[], str]  # the gateway config document, as the task sees it at start
    ca: x509.Certificate
    shipper: LogShipper
    latency: float = 0.0  # seconds added to each mesh-write answer (benchmarks: a WAN round trip)


class _Quiet(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # socketserver's default backlog of 5 drops bursts of concurrent probes

    def handle_error(self, request: Any, client_address: Any) -> None:  # TLS resets etc.: not our story
        pass


class Task:
    """One gateway task: fixed mode for its whole life, like a container that read its secrets."""

    def __init__(self, task_id: str, settings: GatewaySettings, *, fail_to_start: bool = False) -> None:
        if fail_to_start:
            raise RuntimeError(f"task {task_id} failed to start (essential container exited)")
        self.id, self.s = task_id, settings
        self.mode = read_mode(settings.read_parameter())
        task = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: dict, caller: str, note: str = "") -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                task.s.shipper.emit(f"gateway/{task.id}", json.dumps({
                    "level": "info", "kind": "access", "path": self.path, "status": status, "caller": caller,
                    "userAgent": self.headers.get("User-Agent", ""), "cutoverRunId": self.headers.get(RUN_HEADER, ""),
                    "task": task.id, "peer": note}))

            def do_GET(self) -> None:
                if self.path == "/health":
                    self._reply(200, {"status": "ok", "task": task.id, "mode": task.mode}, "")
                else:
                    self._reply(404, {"error": "not found"}, "")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                auth = self.headers.get("Authorization", "")
                caller = task.s.api_keys.get(auth.removeprefix("Bearer ").strip(), "")
                if self.path not in task.s.routes:
                    self._reply(404 if not caller else 200, {"ok": bool(caller)}, caller)
                    return
                if task.s.latency:
                    time.sleep(task.s.latency)
                pem = unquote(self.headers.get(CERT_HEADER, "")).encode()
                cn = verify_client_pem(pem, task.s.ca) if pem else None
                peer = "verified" if cn else "none"
                if cn is None and task.mode == "strict":
                    self._reply(403, {"error": "client certificate required for mesh writes"}, caller, peer)
                    return
                if not caller:
                    self._reply(401, {"error": "missing or unknown API key"}, "", peer)
                    return
                if cn is None:  # advisory: serve, but say so (these are the gate's bypass events)
                    task.s.shipper.emit(f"gateway/{task.id}", f"WARN [mtls-advisory] mesh write without client "
                                        f"certificate: caller={caller} path={self.path} (requireMtls=false)")
                self._reply(200, {"ok": True, "task": task.id}, caller, peer)

        self.server = _Quiet(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name=f"task-{task_id}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


@dataclass
class Front:
    """The ALB stand-in. Tasks are registered/deregistered by the rollout as they come and go."""

    pki: Pki
    tasks: list[Task] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.pki.server.cert, self.pki.server.key)
        ctx.load_verify_locations(self.pki.ca_cert)
        # Passthrough accepts any client certificate; Python's ssl can only accept the ones it can
        # verify, so the tool's self-signed untrusted-probe fixture is added to what the handshake
        # accepts. The task still verifies the chain against the real trust store (the sandbox CA).
        from cutover.probes import UNTRUSTED_CERT
        ctx.load_verify_locations(UNTRUSTED_CERT)
        ctx.verify_mode = ssl.CERT_OPTIONAL  # passthrough: a cert is welcome, not required
        self._rr = itertools.count()
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                # The TLS handshake runs here, in the connection's own thread, not in the accept loop.
                self.request.do_handshake()
                super().setup()

            def log_message(self, *args: Any) -> None:
                pass

            def _proxy(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items()
                           if not k.lower().startswith("x-amzn-mtls") and k.lower() not in ("connection", "host")}
                der = self.connection.getpeercert(binary_form=True)
                if der:
                    pem = ssl.DER_cert_to_PEM_cert(der)
                    headers[CERT_HEADER] = quote(pem, safe="")
                task = front.pick()
                if task is None:
                    self._send(503, b'{"error":"no healthy targets"}')
                    return
                conn = http.client.HTTPConnection("127.0.0.1", task.port, timeout=10)
                try:
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    resp = conn.getresponse()
                    self._send(resp.status, resp.read())
                except OSError:
                    self._send(502, b'{"error":"bad gateway"}')
                finally:
                    conn.close()

            def _send(self, status: int, data: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _proxy

        self.server = _Quiet(("127.0.0.1", 0), Handler)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True, do_handshake_on_connect=False)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="sandbox-front", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def pick(self) -> Task | None:
        with self.lock:
            if not self.tasks:
                return None
            return self.tasks[next(self._rr) % len(self.tasks)]

    def register(self, task: Task) -> None:
        with self.lock:
            self.tasks.append(task)

    def deregister(self, task: Task) -> None:
        with self.lock:
            self.tasks.remove(task)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)
        with self.lock:
            tasks, self.tasks = self.tasks, []
        for t in tasks:
            t.stop()
