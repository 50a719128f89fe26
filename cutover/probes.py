"""Curl-equivalent HTTPS probes of the mesh-write routes (the thin network edge).

Three kinds per route, each sent `per_task x running tasks` times so every task behind the
load balancer is reached:
  no-cert        no client certificate                       strict: 403   advisory: not 403
  forged-header  no cert, but a made-up X-Amzn-Mtls-Clientcert strict: 403   advisory: not 403
  enrolled-cert  an enrolled client certificate               never 403
Probes carry no API key, so even a served probe executes nothing; they carry a marker (user
agent and X-Cutover-Run) so the watch can tell them from callers. TLS server verification
is always on.
"""

from __future__ import annotations

import http.client
import json
import ssl
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

from cutover.mtls import PROBE_USER_AGENT, RUN_HEADER
from envconfig import EnvConfig

NO_CERT, FORGED, ENROLLED = "no-cert", "forged-header", "enrolled-cert"
FORGED_CERT = "-----BEGIN%20CERTIFICATE-----%0AMIIBforgedbycutoverprobe%0A-----END%20CERTIFICATE-----%0A"


@dataclass(frozen=True)
class ProbeResult:
    route: str
    kind: str
    expect: str              # "403" or "not 403"
    statuses: tuple[int, ...]  # 0 = connection/TLS error

    @property
    def ok(self) -> bool:
        if not self.statuses or 0 in self.statuses:
            return False
        return all((s == 403) == (self.expect == "403") for s in self.statuses)


@dataclass(frozen=True)
class ProbeSpec:
    base_url: str
    routes: tuple[str, ...]
    client_cert: str
    client_key: str
    ca_bundle: str | None
    timeout: float
    per_task: int

    @classmethod
    def from_config(cls, cfg: EnvConfig) -> ProbeSpec:
        p = cfg.cutover.probes
        return cls(base_url=p.base_url, routes=cfg.cutover.gate.routes, client_cert=p.client_cert,
                   client_key=p.client_key, ca_bundle=p.ca_bundle, timeout=p.timeout, per_task=p.per_task)


def expectations(mode: str) -> dict[str, str]:
    strict = mode == "strict"
    return {NO_CERT: "403" if strict else "not 403", FORGED: "403" if strict else "not 403",
            ENROLLED: "not 403"}


def _context(spec: ProbeSpec, with_cert: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=spec.ca_bundle)  # verification on, hostname checked
    if with_cert:
        ctx.load_cert_chain(spec.client_cert, spec.client_key)
    return ctx


def _one(spec: ProbeSpec, ctx: ssl.SSLContext, route: str, kind: str, run_id: str) -> int:
    url = urlsplit(spec.base_url)
    conn = http.client.HTTPSConnection(url.hostname, url.port or 443, context=ctx, timeout=spec.timeout)
    headers = {"User-Agent": f"{PROBE_USER_AGENT}/{run_id}", RUN_HEADER: run_id,
               "Content-Type": "application/json", "Connection": "close"}
    if kind == FORGED:
        headers["X-Amzn-Mtls-Clientcert"] = FORGED_CERT
    try:
        conn.request("POST", url.path.rstrip("/") + route, body=json.dumps({"probe": run_id}), headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except (OSError, http.client.HTTPException):
        return 0
    finally:
        conn.close()


def run_probes(spec: ProbeSpec, *, mode: str, tasks: int, run_id: str, workers: int = 16) -> list[ProbeResult]:
    """All routes x kinds x (per_task x tasks) requests, concurrently. Never raises for HTTP."""
    expect = expectations(mode)
    contexts = {False: _context(spec, False), True: _context(spec, True)}
    n = max(spec.per_task * max(tasks, 1), spec.per_task)
    jobs = [(route, kind) for route in spec.routes for kind in (NO_CERT, FORGED, ENROLLED) for _ in range(n)]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        statuses = list(pool.map(lambda j: _one(spec, contexts[j[1] == ENROLLED], j[0], j[1], run_id), jobs))
    results: dict[tuple[str, str], list[int]] = {}
    for (route, kind), status in zip(jobs, statuses, strict=True):
        results.setdefault((route, kind), []).append(status)
    return [ProbeResult(route, kind, expect[kind], tuple(s)) for (route, kind), s in results.items()]
