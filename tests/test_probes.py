"""Probes against a real local HTTPS server doing a real mTLS handshake (certificates generated
here): the sandbox's ALB stand-in (passthrough) in front of gateway tasks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cutover.mtls import with_mode
from cutover.probes import ENROLLED, FORGED, NO_CERT, UNTRUSTED, ProbeSpec, run_probes
from cutover.sandbox.gateway import Front, GatewaySettings, Task
from cutover.sandbox.pki import make_pki, verify_client_pem
from envconfig import render_document

ROUTES = ("/v1/agent/delegate", "/v1/agent/task-runs")
DOC = render_document({"tls": {"mtls": {"meshWritesEnforcement": "advisory"}}})


class Lines:
    """Collects what the gateway would ship to CloudWatch Logs."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def emit(self, stream: str, message: str, ts_ms: int | None = None) -> None:
        self.lines.append(message)

    def access(self) -> list[dict]:
        return [json.loads(m) for m in self.lines if m.startswith("{")]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"), ["cutover-probe", "agent"])


@pytest.fixture
def gateway(pki):
    started: list[Front] = []

    def start(mode: str, tasks: int = 2) -> tuple[Front, Lines]:
        lines = Lines()
        settings = GatewaySettings(routes=ROUTES, api_keys={"k": "agent"}, read_parameter=lambda: with_mode(DOC, mode),
                                   ca=pki.ca, shipper=lines)
        front = Front(pki)
        for i in range(tasks):
            front.register(Task(f"t{i}", settings))
        started.append(front)
        return front, lines
    yield start
    for f in started:
        f.stop()


def spec(pki, front, **kw) -> ProbeSpec:
    probe = pki.clients["cutover-probe"]
    base = dict(base_url=front.url, routes=ROUTES, client_cert=probe.cert, client_key=probe.key,
                ca_bundle=pki.ca_cert, timeout=5.0, per_task=3)
    return ProbeSpec(**{**base, **kw})


def by_kind(results) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for r in results:
        out.setdefault(r.kind, set()).update(r.statuses)
    return out


def test_strict_gateway_answers_403_without_a_cert_and_to_a_forged_header(pki, gateway):
    front, lines = gateway("strict")
    results = run_probes(spec(pki, front), mode="strict", tasks=2, run_id="run-1")
    assert all(r.ok for r in results), [(r.kind, r.statuses) for r in results]
    assert by_kind(results) == {NO_CERT: {403}, FORGED: {403}, UNTRUSTED: {403}, ENROLLED: {401}}
    assert sum(len(r.statuses) for r in results) == len(ROUTES) * 4 * 3 * 2, "routes x kinds x 3 x tasks"
    logged = lines.access()
    assert {e["task"] for e in logged} == {"t0", "t1"}, "every task behind the front was reached"
    assert all(e["cutoverRunId"] == "run-1" and e["userAgent"].startswith("brainstorm-cutover-probe") for e in logged)
    assert {e["peer"] for e in logged if e["status"] == 401} == {"verified"}


def test_advisory_gateway_serves_no_cert_requests_and_says_so(pki, gateway):
    front, _ = gateway("advisory")
    results = run_probes(spec(pki, front), mode="advisory", tasks=2, run_id="run-2")
    assert all(r.ok for r in results)
    assert 403 not in set().union(*by_kind(results).values())


def test_a_gateway_that_does_not_enforce_is_caught(pki, gateway):
    front, _ = gateway("advisory")  # the flag flipped but the tasks never restarted
    results = run_probes(spec(pki, front), mode="strict", tasks=2, run_id="run-3")
    wrong = {r.kind for r in results if not r.ok}
    assert wrong == {NO_CERT, FORGED, UNTRUSTED}


def test_tls_server_verification_stays_on(pki, gateway, tmp_path):
    front, _ = gateway("strict")
    other = make_pki(tmp_path, ["x"])  # a CA that did not sign the server's certificate
    results = run_probes(spec(pki, front, ca_bundle=other.ca_cert), mode="strict", tasks=1, run_id="run-4")
    assert all(set(r.statuses) == {0} and not r.ok for r in results)


def test_a_foreign_client_certificate_is_refused_at_the_handshake(pki, gateway, tmp_path):
    front, _ = gateway("strict")
    other = make_pki(tmp_path, ["intruder"])
    intruder = other.clients["intruder"]
    results = run_probes(spec(pki, front, client_cert=intruder.cert, client_key=intruder.key),
                         mode="strict", tasks=1, run_id="run-5")
    enrolled = [r for r in results if r.kind == ENROLLED]
    assert enrolled and all(not r.ok for r in enrolled)


def test_client_pem_verification(pki, tmp_path):
    good = Path(pki.clients["agent"].cert).read_bytes()
    assert verify_client_pem(good, pki.ca) == "agent"
    foreign = Path(make_pki(tmp_path, ["x"]).clients["x"].cert).read_bytes()
    assert verify_client_pem(foreign, pki.ca) is None
    assert verify_client_pem(b"-----BEGIN CERTIFICATE-----\nforged\n-----END CERTIFICATE-----\n", pki.ca) is None
