"""Probes against a real local HTTPS server doing a real mTLS handshake (certificates generated
here): the sandbox's ALB stand-in (passthrough) in front of gateway tasks."""

from __future__ import annotations

import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote

import pytest

from cutover.mtls import with_mode
from cutover.probes import ENROLLED, FORGED, NO_CERT, UNTRUSTED, ProbeSpec, run_probes
from cutover.sandbox.gateway import CERT_HEADER, Behaviour, Front, GatewaySettings, Task
from cutover.sandbox.pki import make_pki, make_self_signed, parse_client_pem, verify_client_pem
from cutover.sandbox.traffic import post
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

    def start(mode: str, tasks: int = 2, behaviour: Behaviour | None = None) -> tuple[Front, Lines]:
        lines = Lines()
        settings = GatewaySettings(routes=ROUTES, api_keys={"k": "agent"}, read_parameter=lambda: with_mode(DOC, mode),
                                   ca=pki.ca, shipper=lines, behaviour=behaviour or Behaviour())
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


def call(front, *, cert=None, key: str | None = "k", headers=None, ca=None, pki=None, port=None) -> int:
    """One POST to a mesh-write route through the front, over real TLS (server verification on)."""
    ctx = ssl.create_default_context(cafile=ca or pki.ca_cert)
    if cert is not None:
        ctx.load_cert_chain(cert.cert, cert.key)
    return post("127.0.0.1", port or front.port, ctx, ROUTES[0], key=key, agent="test-caller/1", headers=headers)


def test_any_client_certificate_completes_the_handshake_and_verifying_tasks_refuse_an_untrusted_one(
        pki, gateway, tmp_path):
    front, lines = gateway("strict")
    foreign = make_pki(tmp_path, ["intruder"]).clients["intruder"]  # issued by a CA nobody trusts
    self_signed = make_self_signed(tmp_path, "nobody")
    for cert in (foreign, self_signed):
        assert call(front, cert=cert, pki=pki) == 403, "passthrough: the handshake succeeds, the task refuses"
    assert call(front, cert=pki.clients["agent"], pki=pki) == 200
    peers = [(e["status"], e["peer"], e["caller"]) for e in lines.access()]
    assert peers == [(403, "untrusted", "agent"), (403, "untrusted", "agent"), (200, "verified", "agent")], \
        "the task saw each chain, judged it, and knew the caller"


def test_tasks_that_skip_chain_verification_serve_any_well_formed_certificate(pki, gateway, tmp_path):
    front, lines = gateway("strict", behaviour=Behaviour(verify_chain=False))  # the untrusted-cert scenario
    assert call(front, cert=make_self_signed(tmp_path, "nobody"), pki=pki) == 200
    assert call(front, pki=pki) == 403, "no certificate at all is still refused"
    assert [e["peer"] for e in lines.access()] == ["unverified", "none"]


def test_a_client_sent_clientcert_header_never_reaches_a_task(pki, gateway, tmp_path):
    # Even a CA-issued certificate's PEM (which would verify) and even for a task that skips
    # verification: the front strips what the client sent and forwards only what it presented.
    enrolled_pem = Path(pki.clients["agent"].cert).read_text()
    untrusted_chain = (Path(make_self_signed(tmp_path, "x").cert).read_text()
                       + Path(make_pki(tmp_path, ["y"]).ca_cert).read_text())
    for behaviour in (Behaviour(), Behaviour(verify_chain=False)):
        front, lines = gateway("strict", behaviour=behaviour)
        for pem in (enrolled_pem, untrusted_chain):
            headers = {CERT_HEADER: quote(pem, safe="+=/"), "X-Amzn-Mtls-Clientcert-Leaf": quote(pem, safe="+=/")}
            assert call(front, headers=headers, pki=pki) == 403
        assert {e["peer"] for e in lines.access()} == {"none"}


class Echo:
    """A target that records the headers the ALB stand-in forwards."""

    def __init__(self) -> None:
        seen = self.seen = []

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                seen.append(dict(self.headers))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_the_forwarded_header_is_the_presented_chain_leaf_first_url_encoded_like_the_alb(pki, tmp_path):
    from cryptography import x509

    front, echo = Front(pki), Echo()
    front.register(echo)
    try:
        agent = pki.clients["agent"]
        chain_file = tmp_path / "chain.pem"  # the client presents its leaf and its issuer
        chain_file.write_text(Path(agent.cert).read_text() + Path(pki.ca_cert).read_text())
        chained = type(agent)(cert=str(chain_file), key=agent.key)
        forged = {CERT_HEADER: "forged", "X-Amzn-Mtls-Clientcert-Subject": "CN=admin"}
        assert call(front, cert=chained, pki=pki, headers=forged) == 200
        assert call(front, pki=pki, headers=forged) == 200
        with_cert, without = echo.seen
        assert not [k for k in without if k.lower().startswith("x-amzn-mtls")], "no certificate, no header"
        assert [k for k in with_cert if k.lower().startswith("x-amzn-mtls")] == [CERT_HEADER]
        value = with_cert[CERT_HEADER]
        assert value == quote(unquote(value), safe="+=/") and "%0A" in value and "-----BEGIN%20CERTIFICATE" in value
        certs = x509.load_pem_x509_certificates(unquote(value).encode())
        assert [c.subject.rfc4514_string() for c in certs] == [
            x509.load_pem_x509_certificate(Path(agent.cert).read_bytes()).subject.rfc4514_string(),
            pki.ca.subject.rfc4514_string()], "leaf first, then what the client sent with it"
        assert with_cert["X-Forwarded-Proto"] == "https"
    finally:
        front.stop()
        echo.stop()


def test_client_pem_verification(pki, tmp_path):
    good = Path(pki.clients["agent"].cert).read_bytes()
    assert verify_client_pem(good, pki.ca) == "agent"
    foreign = Path(make_pki(tmp_path, ["x"]).clients["x"].cert).read_bytes()
    assert verify_client_pem(foreign, pki.ca) is None
    assert verify_client_pem(b"-----BEGIN CERTIFICATE-----\nforged\n-----END CERTIFICATE-----\n", pki.ca) is None
    self_signed = Path(make_self_signed(tmp_path, "z").cert).read_bytes()
    assert verify_client_pem(self_signed, pki.ca) is None and parse_client_pem(self_signed) == "z"
    assert verify_client_pem(good + Path(pki.ca_cert).read_bytes(), pki.ca) == "agent", "a chain: the leaf decides"
    assert parse_client_pem(b"not a certificate") is None
