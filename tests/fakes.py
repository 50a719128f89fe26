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
        if op in ("list_service_deployments", "describe_service_deployments", "stop_service_deployment"):
            return getattr(self.world.canary, op)
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
        new_id = resp["service"]["deployments"][0]["id"]
        if self.world.canary is not None:
            self.world.canary.start(new_id)
        else:
            self.world.start_rollout(new_id)
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


STAGES = ("PRE_SCALE_UP", "SCALE_UP", "POST_SCALE_UP", "TEST_TRAFFIC_SHIFT", "POST_TEST_TRAFFIC_SHIFT",
          "PRODUCTION_TRAFFIC_SHIFT", "POST_PRODUCTION_TRAFFIC_SHIFT", "BAKE_TIME", "CLEAN_UP")


def canary_script(*, canary_polls: int = 20, bake_polls: int = 200, percent: float = 10.0) -> list[tuple]:
    """(stage, production %, test %, status), one step per DescribeServiceDeployments call."""
    return ([("PRE_SCALE_UP", 0, 0, "IN_PROGRESS"), ("SCALE_UP", 0, 0, "IN_PROGRESS"),
             ("TEST_TRAFFIC_SHIFT", 0, 100, "IN_PROGRESS")]
            + [("PRODUCTION_TRAFFIC_SHIFT", percent, 100, "IN_PROGRESS")] * canary_polls
            + [("BAKE_TIME", 100, 100, "IN_PROGRESS")] * bake_polls + [("CLEAN_UP", 100, 100, "SUCCESSFUL")])


@dataclass
class ScriptedCanary:
    """ECS-native canary for the engine tests: service deployments that move one scripted step per
    DescribeServiceDeployments call (moto implements none of these APIs). The production listener
    serves the blue tasks' mode until all production traffic is on green; the test listener
    (`test_port`) always reaches green; StopServiceDeployment(ROLLBACK) puts blue back at once."""

    world: World
    scripts: list[list[tuple]] = field(default_factory=list)
    test_port: int = 8443
    deployments: list[dict] = field(default_factory=list)
    stops: int = 0

    def start(self, deployment_id: str) -> None:
        w = self.world
        mode = read_mode(w.clients["ssm"].get_parameter(Name=w.cfg.gateway.parameter_name)["Parameter"]["Value"])
        script = list(self.scripts.pop(0) if self.scripts else canary_script())
        arn = (f"arn:aws:ecs:{w.cfg.region}:123456789012:service-deployment/{w.cfg.service.cluster_name}/"
               f"{w.cfg.service.service_name}/sd{len(self.deployments) + 1}")
        self.deployments.insert(0, {"arn": arn, "id": deployment_id, "script": script, "mode": mode,
                                    "blue_mode": w.deployed_mode, "stage": "PRE_SCALE_UP", "prod": 0.0,
                                    "test": 0.0, "status": "IN_PROGRESS", "reason": "in progress"})
        w.rollouts += 1
        w._old_id = deployment_id
        w.task_ids = [f"{w.rollouts:02d}{c * 30}" for c in "cd"]

    def green_mode(self) -> str:
        return self.deployments[0]["mode"] if self.deployments else self.world.deployed_mode

    def _advance(self, d: dict) -> None:
        if d["status"] == "ROLLBACK_IN_PROGRESS":
            d["status"] = "ROLLBACK_SUCCESSFUL"
            return
        if d["status"] != "IN_PROGRESS" or not d["script"]:
            return
        d["stage"], d["prod"], d["test"], d["status"] = d["script"].pop(0)
        if d["prod"] >= 100:
            self.world.deployed_mode = d["mode"]
        if d["status"].startswith("ROLLBACK"):  # ECS's own rollback (an alarm): blue serves again
            d["reason"] = "ECS deployment alarm(s) in ALARM: legitimate-mesh-write-403"
            self.world.deployed_mode = d["blue_mode"]

    def list_service_deployments(self, **kwargs: Any) -> dict:
        wanted = kwargs.get("status")
        return {"serviceDeployments": [{"serviceDeploymentArn": d["arn"], "status": d["status"]}
                                       for d in self.deployments if not wanted or d["status"] in wanted]}

    def describe_service_deployments(self, **kwargs: Any) -> dict:
        out = []
        for arn in kwargs["serviceDeploymentArns"]:
            d = next(x for x in self.deployments if x["arn"] == arn)
            self._advance(d)
            out.append({"serviceDeploymentArn": arn, "status": d["status"], "statusReason": d["reason"],
                        "lifecycleStage": d["stage"],
                        "targetServiceRevision": {"requestedProductionTrafficWeight": d["prod"],
                                                  "requestedTestTrafficWeight": d["test"]},
                        "alarms": {"triggeredAlarmNames": ["legitimate-mesh-write-403"]}
                        if d["status"].startswith("ROLLBACK") and "alarm" in d["reason"] else {}})
        return {"serviceDeployments": out, "failures": []}

    def stop_service_deployment(self, **kwargs: Any) -> dict:
        d = next(x for x in self.deployments if x["arn"] == kwargs["serviceDeploymentArn"])
        assert kwargs["stopType"] == "ROLLBACK" and d["status"] == "IN_PROGRESS"
        d["status"], d["reason"] = "ROLLBACK_IN_PROGRESS", "rollback requested"
        self.world.deployed_mode = d["blue_mode"]
        self.stops += 1
        return {"serviceDeploymentArn": d["arn"]}


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
    canary: ScriptedCanary | None = None   # set: the service deploys ECS-native canary (scripted)
    probed_urls: list[str] = field(default_factory=list)
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
        # While it rolls, one new task is up and taking traffic; all of them once COMPLETED.
        running = self.running if a["state"] == "COMPLETED" else 1 if a["state"] == "IN_PROGRESS" else 0
        new = {**moto_dep, "id": a["id"], "status": "PRIMARY", "rolloutState": a["state"],
               "rolloutStateReason": f"scripted {a['state']}", "runningCount": running,
               "desiredCount": self.running}
        if a["state"] == "COMPLETED":
            self._active = None if not a["script"] else a
            return [new]
        return [new, {**moto_dep, "id": self._old_id, "status": "ACTIVE", "rolloutState": "COMPLETED"}]

    # ---------------------------------------------------------------- gateway model

    def probe(self, spec: ProbeSpec, *, mode: str, tasks: int, run_id: str,
              kinds: tuple[str, ...] | None = None) -> list[ProbeResult]:
        """Answers as tasks that read the parameter when they started, and logs every request in
        the answering task's own stream (awslogs: gateway/gateway/<task-id>), round robin."""
        self.probed_urls.append(spec.base_url)
        test_listener = self.canary is not None and spec.base_url.endswith(f":{self.canary.test_port}")
        strict = (self.canary.green_mode() if test_listener else self.deployed_mode) == "strict"
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


def finished_journal(env: str, *, finished_at: float, state: str = "done", target: str = "strict") -> str:
    """A journal as a finished run of `env` leaves it (JSON, as stored in SSM)."""
    from cutover_core.journal import Journal, RunState, fit

    j = Journal(run_id=f"{env}-run", env=env, operator="arn:aws:sts::1:assumed-role/ops/alice", target=target,
                previous_mode="advisory", parameter=f"/brainstorm-router/{env}/gateway/config",
                started=finished_at - 2400, previous_version=1, new_version=2, state=RunState(state))
    j.record("finish", "done", finished_at)
    return fit(j)


def promoted_from(world: World, env: str, *, finished_ago: float = 3600.0, state: str = "done",
                  target: str = "strict") -> None:
    """`env` (staging) cut over first: its journal, as its own run left it."""
    world.clients["ssm"].put_parameter(
        Name=world.cfg.cutover.journal_of(env), Type="String", Overwrite=True,
        Value=finished_journal(env, finished_at=world.clock.now - finished_ago, state=state, target=target))


def make_world(cfg: EnvConfig, *, promoted: bool = True) -> World:
    """Call inside mock_aws(). `promoted`: the environment cfg is promoted after (staging) has
    finished its strict cutover an hour ago, as the runbook requires before production."""
    clients = {n: boto3.client(n, region_name=cfg.region) for n in SERVICES}
    provision(cfg, clients)
    world = World(cfg=cfg, clients=clients, clock=FakeClock())
    if promoted and cfg.cutover.promotion is not None:
        promoted_from(world, cfg.cutover.promotion.after)
    return world
