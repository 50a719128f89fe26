"""Test doubles for the engine's edges: a fake clock, a scripted ECS rollout around moto, AWS
fault injection, and a gateway model that answers probes by the mode its tasks started with.

moto does not advance ECS rollouts (a forced deployment is COMPLETED at once), so `World`
scripts the states the tool must handle; everything else is moto's real API behaviour.
"""

from __future__ import annotations

import datetime
import email.utils
import io
import json
import time
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.exceptions import ClientError

from cutover.aws import Aws
from cutover.engine import Cutover
from cutover.factory import build
from cutover.mtls import read_mode
from cutover.probes import ENROLLED, FORGED, NO_CERT, SENTINEL, UNTRUSTED, ProbeResult, ProbeSpec, expectations
from cutover.report import ConsoleUi
from cutover.sandbox.provision import provision
from envconfig import EnvConfig

SERVICES = ("ssm", "ecs", "logs", "cloudwatch", "sts")
# Near the real time: CloudWatch (and moto) reject log events more than 2 h in the future or
# 14 days in the past, so the fake clock starts at the wall clock and then moves on its own.
START = float(int(time.time()))


class Crash(BaseException):
    """A process kill: nothing in the tool may catch it."""


class FakeClock:
    def __init__(self, start: float = START) -> None:
        self.now = start
        self.hooks: list[Any] = []
        self.slept = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds
        self.slept += seconds
        for hook in list(self.hooks):
            hook(self.now)


def client_error(code: str, op: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": f"injected {code}"}}, op)


class Faulty:
    """A boto3 client proxy that fails chosen operations: {op: [exception or None, ...]} in order."""

    def __init__(self, client: Any, faults: dict[str, list[Any]] | None = None) -> None:
        self._client, self.faults = client, faults or {}

    def __getattr__(self, op: str) -> Any:
        real = getattr(self._client, op)

        def call(**kwargs: Any) -> Any:
            queue = self.faults.get(op)
            if queue:
                fault = queue.pop(0)
                if callable(fault) and not isinstance(fault, BaseException):
                    fault = fault(kwargs)
                if fault is not None:
                    raise fault
            return real(**kwargs)
        return call


class FakeTimeSsm(Faulty):
    """SSM on the fake clock: moto stamps LastModifiedDate and the reply's Date header with the wall
    clock; the lock is judged on AWS's clock, so here AWS's clock is the test's fake one."""

    def __init__(self, client: Any, clock: FakeClock, written: dict[tuple[str, int], float]) -> None:
        super().__init__(client)
        self.clock, self.written = clock, written

    def __getattr__(self, op: str) -> Any:
        call = super().__getattr__(op)
        if op not in ("put_parameter", "get_parameter"):
            return call

        def timed(**kwargs: Any) -> Any:
            resp = call(**kwargs)
            if op == "put_parameter":
                self.written[(kwargs["Name"], int(resp["Version"]))] = self.clock.now
            else:
                p = resp["Parameter"]
                at = self.written.get((p["Name"], int(p["Version"])), self.clock.now)
                p["LastModifiedDate"] = datetime.datetime.fromtimestamp(at, datetime.UTC)
                resp["ResponseMetadata"]["HTTPHeaders"]["date"] = email.utils.formatdate(self.clock.now, usegmt=True)
            return resp
        return timed


class ScriptedEcs(Faulty):
    """ECS with rollouts that take time: each forced deployment follows the next script."""

    def __init__(self, client: Any, world: World) -> None:
        super().__init__(client)
        self.world = world

    def __getattr__(self, op: str) -> Any:
        if op == "update_service":
            return self._update_service
        if op == "describe_services":
            return self._describe_services
        if op == "list_tasks":
            return self._list_tasks
        if op == "describe_tasks":
            return self._describe_tasks
        return super().__getattr__(op)

    def _list_tasks(self, **kwargs: Any) -> Any:
        arn = f"arn:aws:ecs:{self.world.cfg.region}:123456789012:task/{self.world.cfg.service.cluster_name}"
        return {"taskArns": [f"{arn}/{tid}" for tid in self.world.task_ids]}

    def _describe_tasks(self, **kwargs: Any) -> Any:
        return {"tasks": [{"taskArn": a, "lastStatus": "RUNNING", "startedBy": self.world._old_id}
                          for a in kwargs["tasks"]], "failures": []}

    def _update_service(self, **kwargs: Any) -> Any:
        resp = super().__getattr__("update_service")(**kwargs)
        self.world.start_rollout(resp["service"]["deployments"][0]["id"])
        return self._shape(resp, "service")

    def _describe_services(self, **kwargs: Any) -> Any:
        resp = super().__getattr__("describe_services")(**kwargs)
        self.world.advance_on_describe()
        return self._shape(resp, "services")

    def _shape(self, resp: dict, key: str) -> dict:
        services = resp[key] if key == "services" else [resp[key]]
        for s in services:
            s["deployments"] = self.world.deployments(s["deployments"][0])
            s["runningCount"] = self.world.running
        return resp


@dataclass
class World:
    cfg: EnvConfig
    clients: dict[str, Any]
    clock: FakeClock
    scripts: list[list[str]] = field(default_factory=list)   # one per rollout; default: COMPLETED at once
    deployed_mode: str = "advisory"
    probe_override: dict[str, int] | None = None              # kind -> status, to break probes
    rollouts: int = 0
    running: int = 2
    _active: dict | None = None
    _old_id: str = "ecs-svc/initial"
    ssm_written: dict = field(default_factory=dict)  # (name, version) -> fake time of the write
    task_ids: list[str] = field(default_factory=lambda: ["a" * 32, "b" * 32])
    sentinel_caller_logged: bool = True     # False: the gateway checks mTLS before the API key (a blind watch)
    silent_tasks: set[str] = field(default_factory=set)  # tasks whose log lines never arrive
    probe_lines: int = 0
    _streams: set = field(default_factory=set)
    _rr: int = 0

    # ---------------------------------------------------------------- ECS rollouts

    def start_rollout(self, new_id: str) -> None:
        script = self.scripts.pop(0) if self.scripts else ["COMPLETED"]
        mode = read_mode(self.clients["ssm"].get_parameter(Name=self.cfg.gateway.parameter_name)["Parameter"]["Value"])
        self._active = {"id": new_id, "script": list(script), "state": "IN_PROGRESS", "mode": mode}
        self.rollouts += 1

    def advance_on_describe(self) -> None:
        a = self._active
        if a and a["script"]:
            a["state"] = a["script"].pop(0)
            if a["state"] == "COMPLETED":
                self.deployed_mode = a["mode"]  # new tasks read the parameter when they started
                self._old_id = a["id"]
                self.task_ids = [f"{self.rollouts:02d}{c * 30}" for c in "cd"[:len(self.task_ids)]]

    def deployments(self, moto_dep: dict) -> list[dict]:
        a = self._active
        if a is None:
            return [{**moto_dep, "id": self._old_id, "status": "PRIMARY", "rolloutState": "COMPLETED"}]
        new = {**moto_dep, "id": a["id"], "status": "PRIMARY", "rolloutState": a["state"],
               "rolloutStateReason": f"scripted {a['state']}"}
        if a["state"] == "COMPLETED":
            self._active = None if not a["script"] else a
            return [new]
        return [new, {**moto_dep, "id": self._old_id, "status": "ACTIVE", "rolloutState": "COMPLETED"}]

    # ---------------------------------------------------------------- gateway model

    def probe(self, spec: ProbeSpec, *, mode: str, tasks: int, run_id: str,
              kinds: tuple[str, ...] | None = None) -> list[ProbeResult]:
        """Answers as tasks that read the parameter when they started, and logs every request in
        the answering task's own stream (awslogs: gateway/gateway/<task-id>), round robin."""
        strict = self.deployed_mode == "strict"
        refused = 403 if strict else 401
        status = {NO_CERT: refused, FORGED: refused, UNTRUSTED: refused, ENROLLED: 401,
                  SENTINEL: 403 if strict else 400}
        status.update(self.probe_override or {})
        n = spec.per_task * max(tasks, 1)
        expect = expectations(mode)
        kinds = kinds or spec.kinds(mode)
        for r in spec.routes:
            for k in kinds:
                for _ in range(n):
                    self._log_probe(r, k, status[k], run_id, spec)
        return [ProbeResult(r, k, expect[k], (status[k],) * n) for r in spec.routes for k in kinds]

    def _log_probe(self, route: str, kind: str, status: int, run_id: str, spec: ProbeSpec) -> None:
        task = self.task_ids[self._rr % len(self.task_ids)]
        self._rr += 1
        if task in self.silent_tasks:
            return
        sentinel = kind == SENTINEL
        caller = spec.sentinel_caller if sentinel and self.sentinel_caller_logged else ""
        agent = f"brainstorm-cutover-probe/{run_id}" + (" sentinel" if sentinel else "")
        self.probe_lines += 1
        self.log(at=self.clock.now, route=route, status=status, caller=caller or "", user_agent=agent, run_id=run_id,
                 stream=f"gateway/gateway/{task}")

    # ---------------------------------------------------------------- logs

    def log(self, *, at: float, route: str = "/v1/agent/delegate", status: int = 200, caller: str = "",
            user_agent: str = "curl/8", run_id: str = "", text: str | None = None,
            stream: str = "gateway/test") -> None:
        message = text if text is not None else json.dumps(
            {"path": route, "status": status, "caller": caller, "userAgent": user_agent, "cutoverRunId": run_id})
        logs = self.clients["logs"]
        group = self.cfg.observability.log_group_name
        if stream not in self._streams:
            logs.create_log_stream(logGroupName=group, logStreamName=stream)
            self._streams.add(stream)
        logs.put_log_events(logGroupName=group, logStreamName=stream,
                            logEvents=[{"timestamp": int(at * 1000), "message": message}])

    def at(self, when: float, action: Any) -> None:
        """Run `action()` once, the first time the clock reaches `when`."""
        def hook(now: float) -> None:
            if now >= when:
                self.clock.hooks.remove(hook)
                action()
        self.clock.hooks.append(hook)

    # ---------------------------------------------------------------- reads for assertions

    def param(self) -> dict:
        return self.clients["ssm"].get_parameter(Name=self.cfg.gateway.parameter_name)["Parameter"]

    def mode(self) -> str:
        return read_mode(self.param()["Value"])

    def lock(self) -> dict | None:
        try:
            return json.loads(self.clients["ssm"].get_parameter(Name=self.cfg.lock_parameter)["Parameter"]["Value"])
        except self.clients["ssm"].exceptions.ParameterNotFound:
            return None

    def journal(self) -> dict | None:
        try:
            return json.loads(self.clients["ssm"].get_parameter(Name=self.cfg.journal_parameter)["Parameter"]["Value"])
        except self.clients["ssm"].exceptions.ParameterNotFound:
            return None

    def set_alarm(self, name: str, state: str = "ALARM") -> None:
        self.clients["cloudwatch"].set_alarm_state(AlarmName=name, StateValue=state, StateReason="test")

    # ---------------------------------------------------------------- the tool, as a fresh process would build it

    def cutover(self, *, faults: dict[str, dict[str, list[Any]]] | None = None, interactive: bool = False,
                answers: str = "", sentinel_key: str | None = "key-cutover-sentinel") -> tuple[Cutover, io.StringIO]:
        faults = faults or {}
        clients = {n: Faulty(c, faults.get(n)) for n, c in self.clients.items()}
        clients["ssm"] = FakeTimeSsm(self.clients["ssm"], self.clock, self.ssm_written)
        clients["ssm"].faults = faults.get("ssm", {})
        clients["ecs"] = ScriptedEcs(self.clients["ecs"], self)
        clients["ecs"].faults = faults.get("ecs", {})
        aws = Aws(clients, sleep=self.clock.sleep)
        out = io.StringIO()
        ui = ConsoleUi(out, interactive=interactive, answers=io.StringIO(answers))
        engine = build(self.cfg, ui=ui, aws=aws, clock=self.clock, sleep=self.clock.sleep, probe=self.probe,
                       run_id=lambda: f"run-{int(self.clock.now)}", sentinel_key=sentinel_key)
        return engine, out


def tasks_running(cfg: EnvConfig) -> None:
    """moto leaves a new Fargate service at 0 running tasks; a live service has its desired count."""
    from moto.ecs.models import ecs_backends

    from cutover.sandbox.provision import ACCOUNT

    svc = ecs_backends[ACCOUNT][cfg.region].services[f"{cfg.service.cluster_name}:{cfg.service.service_name}"]
    svc.running_count = cfg.service.desired_count
    svc.deployments[0].update(rolloutState="COMPLETED", runningCount=cfg.service.desired_count, pendingCount=0)


def make_world(cfg: EnvConfig) -> World:
    """Call inside mock_aws()."""
    clients = {n: boto3.client(n, region_name=cfg.region) for n in SERVICES}
    provision(cfg, clients)
    return World(cfg=cfg, clients=clients, clock=FakeClock())
