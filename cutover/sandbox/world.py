"""`--sandbox`: build a faithful local world, hand the real tool a config pointing at it, and
tear everything down afterwards (success, failure or Ctrl-C).

The world: moto's server on 127.0.0.1 (SSM, ECS, Logs, CloudWatch, STS) provisioned from
config/sandbox.yaml; a real mTLS gateway (front + N tasks); a rollout stand-in that replaces the
tasks one at a time when ECS is asked for a new deployment; steady caller traffic. The cutover
itself is *not* reimplemented here: the unchanged tool runs against this world.
"""

from __future__ import annotations

import dataclasses
import http.client
import logging
import os
import random
import shutil
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from cutover.sandbox.gateway import Front, GatewaySettings, LogShipper, Task
from cutover.sandbox.pki import make_pki
from cutover.sandbox.provision import ACCOUNT, provision
from envconfig import EnvConfig

API_KEYS = {"key-sandbox-agents": "sandbox-agents", "key-brainstorm-cli": "brainstorm-cli"}
SCENARIOS = ("clean", "unenrolled-caller", "bypass-traffic", "rollout-fails")


class Rollout:
    """Stands in for ECS: on update_service(forceNewDeployment) it starts new tasks (which read
    the parameter as they start) one at a time, drains the old ones, and moves moto's deployment
    IN_PROGRESS -> COMPLETED, or -> FAILED when new tasks cannot start."""

    def __init__(self, cfg: EnvConfig, front: Front, settings: GatewaySettings, *, fail_first: bool,
                 step_seconds: float = 0.6) -> None:
        from moto.ecs.models import ecs_backends

        self.cfg, self.front, self.settings = cfg, front, settings
        self.fail_next, self.step = fail_first, step_seconds
        self.backend = ecs_backends[ACCOUNT][cfg.region]
        self.key = f"{cfg.service.cluster_name}:{cfg.service.service_name}"
        self.current_id = self.backend.services[self.key].deployments[0]["id"]
        self.completed = 0
        self.rollout_done = threading.Event()
        self._queue: list[tuple[dict, dict]] = []
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._seq = 0
        original = self.backend.update_service

        def update_service(props: dict) -> Any:  # synchronous, so no caller ever sees a stale state
            force = props.get("force_new_deployment", False)
            svc = original(props)
            if force:
                self._begin(svc)
            return svc
        self.backend.update_service = update_service
        self._original = original
        self._thread = threading.Thread(target=self._run, name="sandbox-rollout", daemon=True)
        self._thread.start()

    def start_initial_tasks(self) -> None:
        for _ in range(self.cfg.service.desired_count):
            self.front.register(self._task())
        # moto leaves a new Fargate service at 0 running, rollout IN_PROGRESS; ours is up and steady.
        svc = self.backend.services[self.key]
        svc.running_count, svc.pending_count = len(self.front.tasks), 0
        svc.deployments[0].update(rolloutState="COMPLETED", runningCount=len(self.front.tasks), pendingCount=0,
                                  rolloutStateReason=f"ECS deployment {self.current_id} completed.")

    def _task(self, fail: bool = False) -> Task:
        self._seq += 1
        return Task(f"task-{self._seq}", self.settings, fail_to_start=fail)

    def _begin(self, svc: Any) -> None:
        dep = svc.deployments[0]
        desired = svc.desired_count
        new = {**dep, "status": "PRIMARY", "rolloutState": "IN_PROGRESS", "runningCount": 0, "failedTasks": 0,
               "desiredCount": desired, "rolloutStateReason": f"ECS deployment {dep['id']} in progress."}
        old = {**dep, "id": self.current_id, "status": "ACTIVE", "rolloutState": "COMPLETED",
               "runningCount": desired, "desiredCount": desired}
        svc.deployments = [new, old]
        self._queue.append((new, old))
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.2)
            self._wake.clear()
            while self._queue and not self._stop.is_set():
                new, old = self._queue.pop(0)
                self._roll(new, old)

    def _roll(self, new: dict, old: dict) -> None:
        svc = self.backend.services[self.key]
        fail, self.fail_next = self.fail_next, False
        with self.front.lock:
            old_tasks = list(self.front.tasks)
        for _ in range(new["desiredCount"]):
            if self._stop.wait(self.step):
                return
            try:
                task = self._task(fail)
            except RuntimeError:
                new["failedTasks"] += 1
                if new["failedTasks"] >= 2:  # the circuit breaker's threshold, scaled down
                    new["rolloutState"] = "FAILED"
                    new["rolloutStateReason"] = ("ECS deployment circuit breaker: tasks failed to start. "
                                                 "Rolling back to the previous deployment.")
                    return
                continue
            self.front.register(task)
            if old_tasks:  # one in, one out: never below the desired count (minimum healthy 100%)
                victim = old_tasks.pop(0)
                self.front.deregister(victim)
                victim.stop()
            new["runningCount"] += 1
            old["runningCount"] = max(old["runningCount"] - 1, 0)
        if new["rolloutState"] == "IN_PROGRESS":
            new["rolloutState"] = "COMPLETED"
            new["rolloutStateReason"] = f"ECS deployment {new['id']} completed."
            svc.deployments = [new]
            self.current_id = new["id"]
            self.completed += 1
            self.rollout_done.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)
        self.backend.update_service = self._original


class Traffic:
    """Enrolled callers at a steady rate, unauthenticated noise, and (one scenario) a legitimate
    caller without a certificate who starts calling after the flip."""

    def __init__(self, url: str, pki: Any, routes: tuple[str, ...], *, unenrolled_after: threading.Event | None,
                 interval: float = 0.4) -> None:
        self.url, self.routes, self.interval = url, routes, interval
        self.unenrolled_after = unenrolled_after
        host_port = url.removeprefix("https://").split(":")
        self.host, self.port = host_port[0], int(host_port[1])
        self.plain = ssl.create_default_context(cafile=pki.ca_cert)
        self.enrolled = ssl.create_default_context(cafile=pki.ca_cert)
        agent = pki.clients["sandbox-agents"]
        self.enrolled.load_cert_chain(agent.cert, agent.key)
        self.sent = 0
        self._stop = threading.Event()
        self._rng = random.Random(7)
        self._thread = threading.Thread(target=self._run, name="sandbox-traffic", daemon=True)
        self._thread.start()

    def request(self, ctx: ssl.SSLContext, route: str, key: str | None, agent: str) -> int:
        conn = http.client.HTTPSConnection(self.host, self.port, context=ctx, timeout=5)
        headers = {"User-Agent": agent, "Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        try:
            conn.request("POST", route, body=b"{}", headers=headers)
            resp = conn.getresponse()
            resp.read()
            return resp.status
        except OSError:
            return 0
        finally:
            conn.close()

    def _run(self) -> None:
        tick = 0
        while not self._stop.wait(self.interval):
            tick += 1
            route = self._rng.choice(self.routes)
            self.request(self.enrolled, route, "key-sandbox-agents", "sandbox-agent/1.4")
            if tick % 3 == 0:
                self.request(self.plain, route, None, "python-requests/2.32")  # scanner noise
            if self.unenrolled_after is not None and self.unenrolled_after.is_set() and tick % 2 == 0:
                self.request(self.plain, route, "key-brainstorm-cli", "brainstorm-cli/0.9")
            self.sent += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _seed_history(shipper: LogShipper, scenario: str, now: float) -> None:
    """24 h of history like the ship log's: cold-start timing lines that mention mtls (excluded by the
    gate) and, in one scenario, real advisory bypass events."""
    ms = int(now * 1000)
    timing = [(ms - h * 3_600_000, f"[api/cold-start] mtls context ready in {40 + h}ms") for h in range(1, 11)]
    shipper.put_now("gateway/history", timing)
    if scenario == "bypass-traffic":
        bypass = [(ms - h * 3_600_000 - 60_000, "WARN [mtls-advisory] mesh write without client certificate: "
                   "caller=brainstorm-cli path=/v1/agent/delegate (requireMtls=false)") for h in (2, 5, 9)]
        shipper.put_now("gateway/history", bypass)


def _apply_environment(values: dict[str, str | None]) -> None:
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@contextmanager
def _environment(values: dict[str, str | None]) -> Iterator[None]:
    """Point boto3's standard chain at the sandbox for the run, and put everything back after."""
    saved = {k: os.environ.get(k) for k in values}
    try:
        _apply_environment(values)
        yield
    finally:
        _apply_environment(saved)


@contextmanager
def sandbox_world(cfg: EnvConfig, *, scenario: str = "clean", ui: Any) -> Iterator[EnvConfig]:
    import boto3
    from moto.server import ThreadedMotoServer

    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}: use one of {', '.join(SCENARIOS)}")
    t0 = time.monotonic()
    with ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="cutover-sandbox-"))
        stack.callback(shutil.rmtree, tmp, True)

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request access log
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        moto.start()
        stack.callback(moto.stop)
        host, port = moto.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        stack.enter_context(_environment({
            "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "sandbox", "AWS_SECRET_ACCESS_KEY": "sandbox",
            "AWS_SESSION_TOKEN": None, "AWS_PROFILE": None, "AWS_DEFAULT_REGION": cfg.region}))
        clients = {n: boto3.client(n, region_name=cfg.region, endpoint_url=endpoint)
                   for n in ("ssm", "ecs", "logs", "cloudwatch", "sts")}
        provision(cfg, clients)

        pki = make_pki(tmp, ["cutover-probe", "sandbox-agents"])
        shipper = LogShipper(clients["logs"], cfg.observability.log_group_name)
        stack.callback(shipper.close)
        _seed_history(shipper, scenario, time.time())

        def read_parameter() -> str:
            return clients["ssm"].get_parameter(Name=cfg.gateway.parameter_name)["Parameter"]["Value"]

        settings = GatewaySettings(routes=cfg.cutover.gate.routes, api_keys=API_KEYS, read_parameter=read_parameter,
                                   ca=pki.ca, shipper=shipper)
        front = Front(pki)
        stack.callback(front.stop)
        rollout = Rollout(cfg, front, settings, fail_first=scenario == "rollout-fails")
        stack.callback(rollout.stop)
        rollout.start_initial_tasks()
        traffic = Traffic(front.url, pki, cfg.cutover.gate.routes,
                          unenrolled_after=rollout.rollout_done if scenario == "unenrolled-caller" else None)
        stack.callback(traffic.stop)

        # The tool gets the sandbox's own copy of the config (so writing the new mode back never
        # touches the repository's config/sandbox.yaml) pointing at this world's gateway and certs.
        config_copy = tmp / f"{cfg.environment}.yaml"
        shutil.copy(cfg.source, config_copy)
        probe = pki.clients["cutover-probe"]
        probes = dataclasses.replace(cfg.cutover.probes, base_url=front.url, client_cert=probe.cert,
                                     client_key=probe.key, ca_bundle=pki.ca_cert)
        world_cfg = dataclasses.replace(cfg, source=str(config_copy),
                                        cutover=dataclasses.replace(cfg.cutover, probes=probes))
        ui.info(f"sandbox: scenario {scenario}; moto at {endpoint}; gateway {front.url} -> "
                f"{len(front.tasks)} tasks ({', '.join(t.mode for t in front.tasks)}); "
                f"ready in {time.monotonic() - t0:.1f}s")
        time.sleep(1.0)  # let the first traffic reach the log group, as a live gateway's would have
        try:
            yield world_cfg
        finally:
            traffic.stop()
            status = traffic.request(traffic.plain, cfg.cutover.gate.routes[0], "key-brainstorm-cli",
                                     "brainstorm-cli/0.9")
            ui.info(f"sandbox: after the run the tasks run {', '.join(t.mode for t in front.tasks) or 'nothing'}; "
                    f"POST {cfg.cutover.gate.routes[0]} without a client cert (caller brainstorm-cli) -> {status}")
