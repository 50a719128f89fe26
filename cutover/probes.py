"""Curl-equivalent HTTPS probes of the mesh-write routes (the thin network edge).

Kinds, each sent to every route `per_task x running tasks` times so every task behind the
load balancer is reached:

  kind            what it sends                                          strict     advisory
  no-cert         no client certificate                                  403        not 403
  forged-header   no cert, a well-formed but untrusted PEM chain in       403        not 403
                  X-Amzn-Mtls-Clientcert (a gateway that only checks
                  "a parseable cert is present" lets it through)
  untrusted-cert  a self-signed certificate in the TLS handshake: in      403        not 403
                  ALB passthrough mode the ALB accepts any certificate
                  and forwards it; the target must verify the chain
  enrolled-cert   the enrolled probe certificate                          not 403    not 403
  sentinel        an authenticated caller the tool controls (its API     403        (not sent)
                  key), no certificate: what a hurt caller looks like

Probes other than the sentinel carry no API key, so even a served probe executes nothing (the
gateway refuses it for the key, 401, after mTLS). The sentinel has a key, so it is sent only
under strict, and its request (like every probe's: `cutover.probes.request`) is one the API
rejects after authentication. Every probe is marked (user agent `brainstorm-cutover-probe/<run>`
and the X-Cutover-Run header) so the watch and the gate can tell them from callers. TLS server
verification is always on.
"""

from __future__ import annotations

import http.client
import ssl
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

from cutover.mtls import PROBE_USER_AGENT, RUN_HEADER, SENTINEL_MARK
from envconfig import EnvConfig

NO_CERT, FORGED, UNTRUSTED, ENROLLED, SENTINEL = "no-cert", "forged-header", "untrusted-cert", "enrolled-cert", "sentinel"
KINDS = (NO_CERT, FORGED, UNTRUSTED, ENROLLED, SENTINEL)
FIXTURES = Path(__file__).resolve().parent / "fixtures"
UNTRUSTED_CERT, UNTRUSTED_KEY = str(FIXTURES / "untrusted-probe.pem"), str(FIXTURES / "untrusted-probe.key")
CERT_HEADER = "X-Amzn-Mtls-Clientcert"

# What each status means for a probe, for the report (an unexplained "401 ... ok" helps nobody).
MEANING = {
    403: "refused for the missing/untrusted client certificate",
    401: "past mTLS, refused for the missing API key (probes carry none)",
    400: "past mTLS and authentication, refused as an invalid request (nothing created)",
    422: "past mTLS and authentication, refused as an invalid request (nothing created)",
    404: "route not found",
    0: "connection or TLS failure",
}


@dataclass(frozen=True)
class ProbeResult:
    route: str
    kind: str
    expect: str                 # "403" or "not 403"
    statuses: tuple[int, ...]   # 0 = connection/TLS error

    @property
    def ok(self) -> bool:
        if not self.statuses or 0 in self.statuses:
            return False
        return all((s == 403) == (self.expect == "403") for s in self.statuses)

    @property
    def meaning(self) -> str:
        return "; ".join(f"{s}: {MEANING.get(s, 'served' if 200 <= s < 300 else 'other')}"
                         for s in sorted(set(self.statuses)))


@dataclass(frozen=True)
class Request:
    method: str = "POST"
    body: str = '{"cutoverProbe": true}'
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ProbeSpec:
    base_url: str
    routes: tuple[str, ...]
    client_cert: str
    client_key: str
    ca_bundle: str | None
    timeout: float
    per_task: int
    requests: tuple[tuple[str, Request], ...] = ()  # kind -> request (the config's per-kind view)
    sentinel_key: str | None = None      # the sentinel's API key (read from env/file by the CLI)
    sentinel_caller: str | None = None   # the caller name the gateway should log for it

    @classmethod
    def from_config(cls, cfg: EnvConfig, *, sentinel_key: str | None = None) -> ProbeSpec:
        p = cfg.cutover.probes
        requests = tuple((k, Request(r.method, r.body, tuple(sorted(r.headers.items()))))
                         for k, r in ((k, p.request_for(k)) for k in KINDS))
        return cls(base_url=p.base_url, routes=cfg.cutover.gate.routes, client_cert=p.client_cert,
                   client_key=p.client_key, ca_bundle=p.ca_bundle, timeout=p.timeout, per_task=p.per_task,
                   requests=requests, sentinel_key=sentinel_key,
                   sentinel_caller=p.sentinel.caller if p.sentinel else None)

    def request(self, kind: str) -> Request:
        return dict(self.requests).get(kind, Request())

    def kinds(self, mode: str) -> tuple[str, ...]:
        base = (NO_CERT, FORGED, UNTRUSTED, ENROLLED)
        return (*base, SENTINEL) if mode == "strict" and self.sentinel_key else base


def expectations(mode: str) -> dict[str, str]:
    strict = mode == "strict"
    refused = "403" if strict else "not 403"
    return {NO_CERT: refused, FORGED: refused, UNTRUSTED: refused, SENTINEL: refused, ENROLLED: "not 403"}


def _context(spec: ProbeSpec, kind: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=spec.ca_bundle)  # verification on, hostname checked
    if kind == ENROLLED:
        ctx.load_cert_chain(spec.client_cert, spec.client_key)
    elif kind == UNTRUSTED:
        ctx.load_cert_chain(UNTRUSTED_CERT, UNTRUSTED_KEY)
    return ctx


def _one(spec: ProbeSpec, ctx: ssl.SSLContext, route: str, kind: str, run_id: str) -> int:
    url = urlsplit(spec.base_url)
    conn = http.client.HTTPSConnection(url.hostname, url.port or 443, context=ctx, timeout=spec.timeout)
    agent = f"{PROBE_USER_AGENT}/{run_id}" + (f" {SENTINEL_MARK}" if kind == SENTINEL else "")
    req = spec.request(kind)
    headers = {**dict(req.headers), "User-Agent": agent, RUN_HEADER: run_id,
               "Content-Type": "application/json", "Connection": "close"}
    if kind == FORGED:
        headers[CERT_HEADER] = quote(Path(UNTRUSTED_CERT).read_text(), safe="")
    if kind == SENTINEL:
        headers["Authorization"] = f"Bearer {spec.sentinel_key}"
    try:
        body = req.body.encode() if req.method not in ("GET", "HEAD") else None
        conn.request(req.method, url.path.rstrip("/") + route, body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except (OSError, http.client.HTTPException):
        return 0
    finally:
        conn.close()


def run_probes(spec: ProbeSpec, *, mode: str, tasks: int, run_id: str, kinds: tuple[str, ...] | None = None,
               workers: int = 16) -> list[ProbeResult]:
    """Routes x kinds x (per_task x tasks) requests, concurrently. Never raises for HTTP."""
    expect = expectations(mode)
    kinds = kinds or spec.kinds(mode)
    contexts = {k: _context(spec, k) for k in kinds}
    n = max(spec.per_task * max(tasks, 1), spec.per_task)
    jobs = [(route, kind) for route in spec.routes for kind in kinds for _ in range(n)]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        statuses = list(pool.map(lambda j: _one(spec, contexts[j[1]], j[0], j[1], run_id), jobs))
    results: dict[tuple[str, str], list[int]] = {}
    for (route, kind), status in zip(jobs, statuses, strict=True):
        results.setdefault((route, kind), []).append(status)
    return [ProbeResult(route, kind, expect[kind], tuple(s)) for (route, kind), s in results.items()]
