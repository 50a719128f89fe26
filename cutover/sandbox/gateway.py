"""A real local gateway: an ALB stand-in in mTLS *passthrough* mode in front of gateway tasks.

front  HTTPS listeners on 127.0.0.1 (a production listener and, for ECS-native canary, a test
       listener on its own port), each forwarding to weighted target groups.
       Passthrough means: the listener asks for a client certificate and accepts ANY certificate
       (trusted, foreign, self-signed, expired) or none, exactly like an ALB in passthrough mode,
       which "sends the entire client certificate chain to the target, without verifying it;
       targets should verify the client certificate chain" (AWS ELB docs). The client still has
       to prove it holds the certificate's key (TLS CertificateVerify). The front strips every
       X-Amzn-Mtls-* header a client sent and forwards the presented chain, leaf first, as
       URL-encoded PEM with `+=/` as safe characters in X-Amzn-Mtls-Clientcert (the documented
       passthrough header); no certificate, no header.

       Why pyOpenSSL: Python's `ssl` module cannot accept an arbitrary client certificate in the
       handshake: with CERT_OPTIONAL/CERT_REQUIRED it verifies against the loaded CAs and aborts
       the handshake for anything else, and with CERT_NONE it does not even ask for one. An ALB
       in passthrough does ask and does not verify, so the stand-in uses OpenSSL through
       pyOpenSSL with a verify callback that accepts every chain (`_accept_any`). Server-side
       TLS only; the clients (the tool's probes, the callers) keep using the standard `ssl`.
       Session resumption is off, as on an ALB listener with mutual TLS.
task   plain HTTP on loopback. Reads the gateway config parameter once, when it starts (like an
       ECS task resolving its `secrets`), and enforces tls.mtls.meshWritesEnforcement on the
       mesh-write routes: strict answers 403 without a valid client cert; advisory serves and
       logs an `mtls-advisory` warning. Every request becomes a JSON access-log line (field
       names from the config's access_log section, plus the task id) in the task's own log
       stream `<prefix>/<container>/<task-id>`, shipped in small batches as the awslogs driver
       would. A normal task resolves the API key before the mTLS check, so its 403 lines carry
       the caller; the `blind-watch` behaviour checks mTLS first and logs no caller.
       Optionally (`GatewaySettings.db_pool`, off by default) each served request first needs
       one of the task's DATABASE_POOL_SIZE connections (`dbpool.py`): queueing, and 504 at the
       request timeout, as R20's pool exhaustion did.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import itertools
import json
import queue
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote, unquote

from cryptography import x509

from cutover.mtls import RUN_HEADER, read_mode
from cutover.sandbox.dbpool import DbPool, PoolModel
from cutover.sandbox.pki import Pki, parse_client_pem, verify_client_pem
from envconfig import AccessLog

CERT_HEADER = "X-Amzn-Mtls-Clientcert"
CERT_SAFE = "+=/"  # the ALB's URL-encoding keeps these characters as they are
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
                        "upgrade", "host", "content-length"})


class LogShipper:
    """Batches log lines into CloudWatch Logs (moto), one stream per task, like awslogs.

    `on_ingest` callbacks see every event right after it was put (the moment CloudWatch would
    apply metric filters)."""

    def __init__(self, logs_client: Any, group: str, interval: float = 0.25) -> None:
        self.client, self.group, self.interval = logs_client, group, interval
        self.queue: queue.Queue[tuple[str, int, str]] = queue.Queue()
        self.on_ingest: list[Callable[[str, int, str], None]] = []
        self.shipped = threading.Event()  # set after the first batch of live lines reached the group
        self._streams: set[str] = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
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
        for ts, msg in events:
            for hook in self.on_ingest:
                hook(stream, ts, msg)

    def flush(self) -> None:
        with self._lock:
            batch: dict[str, list[tuple[int, str]]] = {}
            while True:
                try:
                    stream, ts, msg = self.queue.get_nowait()
                except queue.Empty:
                    break
                batch.setdefault(stream, []).append((ts, msg))
            for stream, events in batch.items():
                self.put_now(stream, events)
            if batch:
                self.shipped.set()

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


@dataclass(frozen=True)
class Behaviour:
    """How a task's gateway code checks a mesh write (scenarios plant bugs here)."""

    verify_chain: bool = True     # False: any well-formed certificate passes (`untrusted-cert`)
    key_before_mtls: bool = True  # False: mTLS is checked before the API key, 403s carry no caller (`blind-watch`)


@dataclass
class GatewaySettings:
    routes: tuple[str, ...]
    api_keys: dict[str, str]          # bearer token -> caller name
    read_parameter: Callable[[], str]  # the gateway config document, as the task sees it at start
    ca: x509.Certificate
    shipper: Any                       # LogShipper or anything with emit(stream, message)
    latency: float = 0.0  # seconds added to each mesh-write answer (benchmarks: a WAN round trip)
    fields: AccessLog = field(default_factory=AccessLog)
    behaviour: Behaviour = field(default_factory=Behaviour)
    stream_prefix: str = "gateway"    # awslogs stream prefix
    container: str = "gateway"        # container name: streams are <prefix>/<container>/<task-id>
    db_pool: PoolModel | None = None  # None: no database pool modelled (every served request is instant)


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
        self.stream = f"{settings.stream_prefix}/{settings.container}/{task_id}"
        self.mode = read_mode(settings.read_parameter())
        self.started_at = time.time()
        self.db = DbPool(settings.db_pool) if settings.db_pool else None  # this task's own pool
        task = self
        f = settings.fields

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
                task.s.shipper.emit(task.stream, json.dumps({
                    "level": "info", "kind": "access", f.route_field: self.path, f.status_field: status,
                    f.caller_field: caller, f.user_agent_field: self.headers.get("User-Agent", ""),
                    f.run_id_field: self.headers.get(RUN_HEADER, ""), "task": task.id, "peer": note}))

            def _serve(self, body: dict, caller: str, note: str = "") -> None:
                """A request the gateway works on: with a pool modelled, it needs a connection first."""
                if task.db is not None and not task.db.serve():
                    self._reply(504, {"error": "gateway timeout: no database connection in time"}, caller, note)
                    return
                self._reply(200, body, caller, note)

            def do_GET(self) -> None:
                if self.path == "/health":
                    self._reply(200, {"status": "ok", "task": task.id, "mode": task.mode}, "")
                else:
                    self._reply(404, {"error": "not found"}, "")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                b = task.s.behaviour
                auth = self.headers.get("Authorization", "")
                caller = task.s.api_keys.get(auth.removeprefix("Bearer ").strip(), "")
                if self.path not in task.s.routes:
                    if caller:
                        self._serve({"ok": True}, caller)
                    else:
                        self._reply(404, {"ok": False}, caller)
                    return
                if task.s.latency:
                    time.sleep(task.s.latency)
                pem = unquote(self.headers.get(CERT_HEADER, "")).encode()
                if not pem:
                    cn, peer = None, "none"
                elif b.verify_chain:
                    cn = verify_client_pem(pem, task.s.ca)
                    peer = "verified" if cn else "untrusted"
                else:
                    cn = parse_client_pem(pem)
                    peer = "unverified" if cn else "malformed"
                if cn is None and task.mode == "strict":
                    # A normal task knows who called before it refuses; a blind one never looked.
                    self._reply(403, {"error": "client certificate required for mesh writes"},
                                caller if b.key_before_mtls else "", peer)
                    return
                if not caller:
                    self._reply(401, {"error": "missing or unknown API key"}, "", peer)
                    return
                if cn is None:  # advisory: serve, but say so (these are the gate's bypass events)
                    task.s.shipper.emit(task.stream, f"WARN [mtls-advisory] mesh write without client "
                                        f"certificate: caller={caller} path={self.path} (requireMtls=false)")
                self._serve({"ok": True}, caller, peer)

        self.server = _Quiet(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), name=f"task-{task_id[:8]}",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self.db is not None:
            self.db.close()  # requests waiting for or holding a connection end now (server_close joins them)
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


# ---------------------------------------------------------------- TLS passthrough (pyOpenSSL)


def _accept_any(conn: Any, cert: Any, errnum: int, depth: int, ok: int) -> bool:
    return True  # passthrough: the listener does not judge the chain; the targets do


def passthrough_context(cert_file: str, key_file: str) -> Any:
    from OpenSSL import SSL

    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
    ctx.use_certificate_chain_file(cert_file)
    ctx.use_privatekey_file(key_file)
    ctx.check_privatekey()
    ctx.set_verify(SSL.VERIFY_PEER, _accept_any)  # ask for a certificate, accept any (or none)
    ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    ctx.set_options(SSL.OP_NO_TICKET)
    return ctx


class _TlsReader(io.RawIOBase):
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        from OpenSSL import SSL

        try:
            return self.conn.recv_into(buffer)
        except (SSL.ZeroReturnError, SSL.SysCallError):
            return 0  # the peer closed (or reset) the connection


class _TlsWriter(io.BufferedIOBase):
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = bytes(b)
        self.conn.sendall(data)
        return len(data)


def chain_pem(conn: Any) -> str | None:
    """The chain the client presented, leaf first, as PEM; None without a client certificate."""
    from OpenSSL import crypto

    leaf = conn.get_peer_certificate()
    if leaf is None:
        return None
    certs = [leaf]
    for c in conn.get_peer_cert_chain() or []:  # server side: OpenSSL leaves the leaf out (or not)
        if c.to_cryptography() != leaf.to_cryptography():
            certs.append(c)
    return "".join(crypto.dump_certificate(crypto.FILETYPE_PEM, c).decode() for c in certs)


# ---------------------------------------------------------------- the ALB stand-in


class TargetGroup:
    def __init__(self, name: str) -> None:
        self.name = name
        self.tasks: list[Task] = []
        self._rr = itertools.count()

    def pick(self) -> Task | None:
        if not self.tasks:
            return None
        return self.tasks[next(self._rr) % len(self.tasks)]


class Listener:
    """One HTTPS listener in passthrough mode, forwarding to weighted target groups."""

    def __init__(self, front: Front, name: str, ctx: Any, weights: dict[str, float]) -> None:
        self.front, self.name = front, name
        self.weights = dict(weights)
        self._current: dict[str, float] = {}
        listener = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                from OpenSSL import SSL

                raw: socket.socket = self.request
                # A blocking socket with a kernel receive timeout: a client that stalls mid-handshake
                # or mid-request frees this thread after 10 s instead of holding it forever.
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 10, 0))
                conn = SSL.Connection(ctx, raw)
                conn.set_accept_state()
                conn.do_handshake()  # in the connection's own thread, not in the accept loop
                self.tls = conn
                self.peer_chain = chain_pem(conn)
                self.connection = conn
                self.rfile = io.BufferedReader(_TlsReader(conn))
                self.wfile = _TlsWriter(conn)

            def finish(self) -> None:
                with contextlib.suppress(Exception):
                    self.wfile.flush()
                with contextlib.suppress(Exception):
                    self.tls.shutdown()  # close_notify

            def log_message(self, *args: Any) -> None:
                pass

            def _proxy(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                # A client never gets to say which certificate it presented: drop what it sent.
                headers = {k: v for k, v in self.headers.items()
                           if not k.lower().startswith("x-amzn-mtls") and k.lower() not in HOP_BY_HOP}
                headers.update({"X-Forwarded-For": self.client_address[0], "X-Forwarded-Proto": "https",
                                "X-Forwarded-Port": str(listener.port)})
                if self.peer_chain:
                    headers[CERT_HEADER] = quote(self.peer_chain, safe=CERT_SAFE)
                tg, task = listener.route()
                if task is None:
                    self._send(503, b'{"error":"no healthy targets"}')
                    return
                conn = http.client.HTTPConnection("127.0.0.1", task.port, timeout=listener.front.target_timeout)
                try:
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    listener.front.count(listener.name, tg, task)
                    self._send(resp.status, data)
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

            do_GET = do_POST = do_PUT = do_DELETE = _proxy

        self.server = _Quiet(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), name=f"sandbox-listener-{name}",
                                        daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def route(self) -> tuple[str, Task | None]:
        """Smooth weighted round robin over the target groups, then round robin inside one:
        over any run of requests each group gets its weight's share."""
        with self.front.lock:
            live = {n: w for n, w in self.weights.items() if w > 0}
            if not live:
                return "", None
            total = sum(live.values())
            for n, w in live.items():
                self._current[n] = self._current.get(n, 0.0) + w
            best = max(live, key=lambda n: self._current[n])
            self._current[best] -= total
            return best, self.front.groups[best].pick()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


class Front:
    """The ALB: target groups and listeners. The ECS stand-in registers and deregisters tasks
    and sets the listeners' weights as a deployment moves traffic."""

    def __init__(self, pki: Pki, groups: tuple[str, ...] = ("tg-1",)) -> None:
        self.pki = pki
        # How long a listener waits for a target's answer (the ALB's idle timeout), then 502.
        self.target_timeout = 10.0
        self.lock = threading.RLock()
        self.groups = {g: TargetGroup(g) for g in groups}
        self._ctx = passthrough_context(pki.server.cert, pki.server.key)
        self.listeners: dict[str, Listener] = {}
        self.routed: Counter[tuple[str, str]] = Counter()  # (listener, target group) -> requests answered
        self.add_listener("production", {groups[0]: 100.0})

    def add_listener(self, name: str, weights: dict[str, float]) -> Listener:
        listener = Listener(self, name, self._ctx, weights)
        self.listeners[name] = listener
        return listener

    # the production listener, for callers that only know one URL
    @property
    def url(self) -> str:
        return self.listeners["production"].url

    @property
    def port(self) -> int:
        return self.listeners["production"].port

    @property
    def tasks(self) -> list[Task]:
        with self.lock:
            return [t for g in self.groups.values() for t in g.tasks]

    def register(self, task: Task, group: str | None = None) -> None:
        with self.lock:
            self.groups[group or next(iter(self.groups))].tasks.append(task)

    def deregister(self, task: Task) -> None:
        with self.lock:
            for g in self.groups.values():
                if task in g.tasks:
                    g.tasks.remove(task)

    def group_of(self, task: Task) -> str | None:
        with self.lock:
            return next((g.name for g in self.groups.values() if task in g.tasks), None)

    def set_weights(self, listener: str, weights: dict[str, float]) -> None:
        with self.lock:
            lst = self.listeners[listener]
            lst.weights = dict(weights)
            lst._current = {}

    def count(self, listener: str, group: str, task: Task) -> None:
        with self.lock:
            self.routed[(listener, group)] += 1

    def stop(self) -> None:
        for t in self.tasks:  # the listeners' threads wait for their tasks' answers: end pooled waits first
            db = getattr(t, "db", None)  # anything with a port can be a target (tests register stand-ins)
            if db is not None:
                db.close()
        for lst in list(self.listeners.values()):
            lst.stop()
        with self.lock:
            tasks = self.tasks
            for g in self.groups.values():
                g.tasks = []
        for t in tasks:
            t.stop()
