"""5. Probe round: the strict round the tool sends after the flip (every route x every probe kind
for strict, the sentinel included, x per_task x tasks requests) against a real local mTLS gateway
(the sandbox's ALB stand-in in passthrough + 2 tasks, in its own process), concurrent (16
workers) vs sequential (1 worker), with 0 ms and 50 ms of added time per request (a WAN round
trip plus the gateway's own work, which loopback does not have)."""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import tempfile
import time
from pathlib import Path

from common import save, summary

from cutover.probes import ProbeSpec, run_probes
from cutover.sandbox.pki import make_pki
from envconfig import load, render_document

ROUNDS = 5


class Discard:
    def emit(self, *args, **kwargs) -> None:
        pass


SENTINEL_KEY = "key-bench-sentinel"


def serve(pki, routes, tasks: int, latency: float, conn, stop) -> None:
    from cryptography import x509

    from cutover.sandbox.gateway import Front, GatewaySettings, Task

    ca = x509.load_pem_x509_certificate(Path(pki.ca_cert).read_bytes())
    doc = render_document({"tls": {"mtls": {"meshWritesEnforcement": "strict"}}})
    settings = GatewaySettings(routes=routes, api_keys={SENTINEL_KEY: "cutover-sentinel"}, read_parameter=lambda: doc,
                               ca=ca, shipper=Discard(),
                               latency=latency)
    front = Front(pki)
    for i in range(tasks):
        front.register(Task(f"t{i}", settings))
    conn.send(front.url)
    stop.wait()
    front.stop()


def main() -> None:
    cfg = load("sandbox")
    routes = cfg.cutover.gate.routes
    tasks = cfg.service.desired_count
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        pki = make_pki(Path(tmp), ["cutover-probe"])
        probe = pki.clients["cutover-probe"]
        ctx = mp.get_context("spawn")
        for latency in (0.0, 0.05):
            parent, child = ctx.Pipe()
            stop = ctx.Event()
            served = dataclasses.replace(pki, ca=None)  # the CA object does not pickle; the child reloads it
            proc = ctx.Process(target=serve, args=(served, routes, tasks, latency, child, stop), daemon=True)
            proc.start()
            url = parent.recv()
            spec = ProbeSpec(base_url=url, routes=routes, client_cert=probe.cert, client_key=probe.key,
                             ca_bundle=pki.ca_cert, timeout=10, per_task=3, sentinel_key=SENTINEL_KEY,
                             sentinel_caller="cutover-sentinel")
            kinds = spec.kinds("strict")
            try:
                for label, workers in (("concurrent_16", 16), ("sequential_1", 1)):
                    times = []
                    for _ in range(ROUNDS):
                        t = time.perf_counter()
                        out = run_probes(spec, mode="strict", tasks=tasks, run_id="bench", workers=workers)
                        times.append(time.perf_counter() - t)
                        assert all(r.ok for r in out), [(r.kind, r.statuses) for r in out if not r.ok]
                        assert sum(len(r.statuses) for r in out) == len(routes) * len(kinds) * 3 * tasks
                    results[f"{label}_latency_{int(latency * 1000)}ms"] = summary(times)
            finally:
                stop.set()
                proc.join(10)
    n = len(routes) * len(kinds) * 3 * tasks
    save("probe_round", {"requests_per_round": n, "routes": len(routes), "kinds": list(kinds), "per_task": 3,
                         "tasks": tasks, "rounds": ROUNDS, **results})
    for k, v in results.items():
        print(f"{n} probes, {k}: median {v['median']:.2f}s p95 {v['p95']:.2f}s")


if __name__ == "__main__":
    main()
