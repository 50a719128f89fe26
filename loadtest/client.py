"""One HTTP(S) request with a total deadline: connect, TLS handshake, send, wait, read.

The standard library only (http.client + ssl, as the cutover's probes), one fresh connection per
request: in an open model every request is concurrent with the others anyway, and a new TLS
handshake per request is what an uncached client costs the load balancer (k6 reuses connections by
default; the difference is a handshake, not queueing). TLS server verification is always on.
"""

from __future__ import annotations

import http.client
import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from loadtest.schedule import Result


class UsageError(Exception):
    """Bad options: the message says what and how to fix it (exit 2)."""


@dataclass(frozen=True)
class Target:
    url: str                        # https://host[:port][/prefix]
    method: str = "POST"
    route: str = "/v1/chat/completions"
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float = 60.0           # seconds, the whole request (k6's default is 60 s)
    context: ssl.SSLContext | None = None

    @property
    def path(self) -> str:
        prefix = urlsplit(self.url).path.rstrip("/")
        return f"{prefix}{self.route}"


def tls_context(*, ca_bundle: str | None = None, client_cert: str | None = None,
                client_key: str | None = None) -> ssl.SSLContext:
    """Server verification on (system store, or the CA bundle); a client certificate for mTLS."""
    if (client_cert is None) != (client_key is None):
        raise UsageError("--client-cert and --client-key go together (the certificate and its private key)")
    for name, path in (("--ca-bundle", ca_bundle), ("--client-cert", client_cert), ("--client-key", client_key)):
        if path is not None and not Path(path).is_file():
            raise UsageError(f"{name} {path}: no such file")
    ctx = ssl.create_default_context(cafile=ca_bundle)
    if client_cert is not None:
        ctx.load_cert_chain(client_cert, client_key)
    return ctx


def read_api_key(*, env: str | None, file: str | None, environ: dict[str, str] | None = None) -> str | None:
    """The API key from an environment variable or a file, never from the command line."""
    if env and file:
        raise UsageError("give one of --api-key-env, --api-key-file")
    if env:
        value = (os.environ if environ is None else environ).get(env, "").strip()
        if not value:
            raise UsageError(f"--api-key-env {env}: the variable is not set or empty")
        return value
    if file:
        path = Path(file)
        if not path.is_file():
            raise UsageError(f"--api-key-file {file}: no such file")
        value = path.read_text(encoding="utf-8").strip()
        if not value:
            raise UsageError(f"--api-key-file {file}: the file is empty")
        return value
    return None


def auth_headers(key: str | None, header: str = "Authorization") -> dict[str, str]:
    if key is None:
        return {}
    return {header: f"Bearer {key}" if header.lower() == "authorization" else key}


def sender(target: Target, *, clock: Callable[[], float] = time.monotonic) -> Callable[[], Result]:
    """A function that sends the target's request once and says what happened."""
    parts = urlsplit(target.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--url {target.url!r}: write http(s)://host[:port]")
    host, port = parts.hostname, parts.port
    headers = {"User-Agent": "brainstorm-loadtest/1", "Content-Type": "application/json", **target.headers}
    body = target.body if target.method not in ("GET", "HEAD") else None
    path = target.path

    def send() -> Result:
        start = clock()
        deadline = start + target.timeout

        def left() -> float:
            remaining = deadline - clock()
            if remaining <= 0:
                raise TimeoutError("request timeout")
            return remaining

        if parts.scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(host, port, timeout=left(),
                                                                            context=target.context)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=left())
        try:
            conn.connect()
            assert conn.sock is not None
            conn.sock.settimeout(left())
            conn.request(target.method, path, body=body, headers=headers)
            conn.sock.settimeout(left())
            resp = conn.getresponse()
            conn.sock.settimeout(left())
            resp.read()
            latency = clock() - start
            if latency > target.timeout:
                return Result(0, latency, "timeout", "request timeout")
            outcome = "ok" if 200 <= resp.status < 400 else "http"  # k6's default expected statuses
            return Result(resp.status, latency, outcome)
        except TimeoutError:
            return Result(0, clock() - start, "timeout", "request timeout")
        except (OSError, http.client.HTTPException) as exc:
            return Result(0, clock() - start, "error", f"{type(exc).__name__}: {exc}"[:200])
        finally:
            conn.close()

    return send
