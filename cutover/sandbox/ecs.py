"""The ECS stand-in: the service's tasks, its deployments (rolling and ECS-native canary), the
service-deployment records, deployment alarms and `ECS Deployment State Change` events.

moto keeps the service (DescribeServices); this module moves it. Everything it does is visible
through plain boto3 calls against the sandbox's moto server (see `awsserver.py`):
  DescribeServices            deployments PRIMARY/ACTIVE with rolloutState, running counts
  ListTasks / DescribeTasks   exactly the sandbox's tasks: 32-hex ids, startedBy = the ECS
                              deployment id (ecs-svc/...) that started them, RUNNING or STOPPED
  List/DescribeServiceDeployments, StopServiceDeployment(ROLLBACK)   (moto has none of them)

Rolling: a forced deployment is IN_PROGRESS inside the UpdateService call; new tasks (which read
the gateway parameter as they start) replace old ones one at a time (`step` seconds each, minimum
healthy 100%); a newer forced deployment supersedes one in flight at once; tasks that cannot
start trip the circuit breaker (threshold 2, scaled down) and the deployment is FAILED.

Canary (controller ECS, strategy CANARY) plays the documented lifecycle stages:
  [RECONCILE_SERVICE, only when a superseded deployment left a second revision running]
  PRE_SCALE_UP, SCALE_UP (green tasks start in the alternate target group, 0 % traffic),
  POST_SCALE_UP, TEST_TRAFFIC_SHIFT (the test listener moves to green), POST_TEST_TRAFFIC_SHIFT,
  PRODUCTION_TRAFFIC_SHIFT (canaryPercent to green for the canary bake, then 100 %),
  POST_PRODUCTION_TRAFFIC_SHIFT, BAKE_TIME (blue still running, 0 % traffic), CLEAN_UP.
Time is scaled: one configured minute lasts `seconds_per_minute` sandbox seconds (default 1 s),
so a 10-minute canary bake takes 10 s; stages without work last `stage_pause`.
From SCALE_UP to the end of BAKE_TIME the stand-in polls the deployment alarms in moto's
CloudWatch; one in ALARM rolls back like ECS: production and test traffic back to blue at once,
green stopped, ROLLBACK_IN_PROGRESS -> ROLLBACK_SUCCESSFUL. StopServiceDeployment(ROLLBACK) does
the same on request.
"""

from __future__ import annotations

import copy
import datetime as dt
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cutover.sandbox.gateway import Front, GatewaySettings, Task

STAGES = ("RECONCILE_SERVICE", "PRE_SCALE_UP", "SCALE_UP", "POST_SCALE_UP", "TEST_TRAFFIC_SHIFT",
          "POST_TEST_TRAFFIC_SHIFT", "PRODUCTION_TRAFFIC_SHIFT", "POST_PRODUCTION_TRAFFIC_SHIFT", "BAKE_TIME",
          "CLEAN_UP")
IN_FLIGHT = ("PENDING", "IN_PROGRESS", "ROLLBACK_REQUESTED", "ROLLBACK_IN_PROGRESS", "STOP_REQUESTED")
GROUPS = ("tg-1", "tg-2")  # the production and the alternate target group; ECS alternates between them


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Plan:
    """How the stand-in deploys. Minutes are configured minutes; the sandbox scales them."""

    strategy: str = "rolling"           # rolling | canary
    step: float = 0.6                    # sandbox seconds for one task to start
    canary_percent: float = 10.0
    canary_bake_minutes: float = 5.0
    bake_minutes: float = 30.0
    seconds_per_minute: float = 1.0      # the time scale: 1 configured minute -> this many seconds
    stage_pause: float = 0.1             # sandbox seconds spent in a stage that has no work to do
    alarm_names: tuple[str, ...] = ()    # deployment alarms (rollback enabled)
    alarm_poll: float = 0.1
    fail_first: bool = False             # the first forced deployment's tasks cannot start
    circuit_breaker_threshold: int = 2   # failed task starts before the breaker trips (scaled down)

    @property
    def canary_bake(self) -> float:
        return self.canary_bake_minutes * self.seconds_per_minute

    @property
    def bake(self) -> float:
        return self.bake_minutes * self.seconds_per_minute


@dataclass
class EcsTask:
    id: str
    arn: str
    deployment_id: str            # startedBy: the ECS deployment (ecs-svc/...) that started it
    revision_arn: str
    task_definition_arn: str
    group: str                    # target group
    gateway: Task
    created_at: dt.datetime = field(default_factory=utcnow)
    started_at: dt.datetime = field(default_factory=utcnow)
    last_status: str = "RUNNING"
    desired_status: str = "RUNNING"
    stopped_at: dt.datetime | None = None
    stopping_at: dt.datetime | None = None
    stopped_reason: str | None = None
    stop_code: str | None = None


@dataclass
class Deployment:
    """One service deployment (ServiceDeployment) and its DescribeServices entry (`moto`)."""

    id: str                       # ecs-svc/...
    arn: str                      # service deployment ARN
    revision_arn: str             # target service revision
    source_revisions: list[str]
    group: str                    # target group of its tasks
    source_group: str
    strategy: str
    moto: dict                    # the dict moto serializes in DescribeServices
    desired: int
    status: str = "PENDING"
    status_reason: str = ""
    stage: str | None = None
    created_at: dt.datetime = field(default_factory=utcnow)
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    stopped_at: dt.datetime | None = None
    updated_at: dt.datetime = field(default_factory=utcnow)
    rollback: dict | None = None
    alarms_status: str = "DISABLED"
    triggered: list[str] = field(default_factory=list)
    cb_status: str = "MONITORING"
    failures: int = 0
    prod_weight: float = 0.0      # green's share of production traffic, percent
    test_weight: float = 0.0
    superseded: bool = False
    stop_request: str | None = None
    fail_tasks: bool = False


class StandInError(Exception):
    """Raised inside an API call; `awsserver` turns it into the ECS error of that code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class EcsStandIn:
    def __init__(self, *, front: Front, settings: GatewaySettings, service: Any, task_definition: str,
                 account: str, region: str, plan: Plan, cloudwatch: Any,
                 deployment_config: dict, log: Callable[[str], None] = lambda _m: None) -> None:
        self.front, self.settings, self.svc, self.plan = front, settings, service, plan
        self.cloudwatch, self.deployment_config, self.log = cloudwatch, deployment_config, log
        self.account, self.region = account, region
        self.cluster, self.service_name = service.cluster_name, service.name
        self.cluster_arn, self.service_arn = service.cluster_arn, service.arn
        self.task_definition = task_definition
        # moto does not keep a service's deploymentConfiguration; DescribeServices should show it.
        service.deployment_configuration = deployment_config
        self.lock = threading.RLock()
        self.tasks: dict[str, EcsTask] = {}
        self.deployments: list[Deployment] = []   # newest last
        self.listeners: list[Callable[[dict], None]] = []
        self.stage_hooks: list[Callable[[str, str], None]] = []
        self.events: list[dict] = []
        self.production_group = GROUPS[0]
        self._first_forced = True
        self._queue: list[Deployment] = []
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sandbox-ecs", daemon=True)

    # ------------------------------------------------------------------ naming

    def _revision_arn(self) -> str:
        return (f"arn:aws:ecs:{self.region}:{self.account}:service-revision/{self.cluster}/{self.service_name}/"
                f"{secrets.randbelow(10**19):019d}")

    def _deployment_arn(self) -> str:
        alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
        suffix = "".join(secrets.choice(alphabet) for _ in range(21))
        return f"arn:aws:ecs:{self.region}:{self.account}:service-deployment/{self.cluster}/{self.service_name}/{suffix}"

    def _task_arn(self, task_id: str) -> str:
        return f"arn:aws:ecs:{self.region}:{self.account}:task/{self.cluster}/{task_id}"

    # ------------------------------------------------------------------ start, stop

    def start(self) -> None:
        """The service as the stack leaves it: `desired` tasks of one completed deployment."""
        with self.lock:
            dep0 = self.svc.deployments[0]
            d = Deployment(id=dep0["id"], arn=self._deployment_arn(), revision_arn=self._revision_arn(),
                           source_revisions=[], group=GROUPS[0], source_group=GROUPS[0],
                           strategy=self.plan.strategy, moto=dep0, desired=self.svc.desired_count,
                           status="SUCCESSFUL", started_at=utcnow(), finished_at=utcnow())
            d.status_reason = "Service deployment completed."
            self.deployments.append(d)
        for _ in range(self.svc.desired_count):
            self._start_task(d)
        with self.lock:
            d.moto.update(rolloutState="COMPLETED", rolloutStateReason=f"ECS deployment {d.id} completed.")
            self._sync()
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def on_stage(self, hook: Callable[[str, str], None]) -> None:
        """Call `hook(deployment_id, stage)` as a canary deployment enters each lifecycle stage."""
        self.stage_hooks.append(hook)

    def on_event(self, callback: Callable[[dict], None]) -> None:
        self.listeners.append(callback)

    # ------------------------------------------------------------------ tasks

    def _start_task(self, d: Deployment, *, fail: bool = False) -> EcsTask:
        task_id = uuid.uuid4().hex  # 32 hex characters, like an ECS task id
        gw = Task(task_id, self.settings, fail_to_start=fail)  # reads the parameter now
        t = EcsTask(id=task_id, arn=self._task_arn(task_id), deployment_id=d.id, revision_arn=d.revision_arn,
                    task_definition_arn=self.task_definition, group=d.group, gateway=gw)
        with self.lock:
            self.tasks[task_id] = t
            self.front.register(gw, d.group)
            self._sync()
        return t

    def _stop_task(self, t: EcsTask, reason: str) -> None:
        with self.lock:
            if t.last_status != "RUNNING":
                return
            self.front.deregister(t.gateway)  # out of the target group first: no new requests
            t.desired_status, t.last_status = "STOPPED", "STOPPED"
            t.stopping_at = t.stopped_at = utcnow()
            t.stopped_reason, t.stop_code = reason, "ServiceSchedulerInitiated"
            self._sync()
        t.gateway.stop()

    def running(self, deployment_id: str | None = None, group: str | None = None) -> list[EcsTask]:
        with self.lock:
            return [t for t in self.tasks.values() if t.last_status == "RUNNING"
                    and (deployment_id is None or t.deployment_id == deployment_id)
                    and (group is None or t.group == group)]

    # ------------------------------------------------------------------ DescribeServices

    def _sync(self) -> None:
        """Make moto's view (DescribeServices) agree with the tasks: PRIMARY first, then every
        older deployment that still has running tasks (ACTIVE)."""
        with self.lock:
            counts: dict[str, int] = {}
            for t in self.tasks.values():
                if t.last_status == "RUNNING":
                    counts[t.deployment_id] = counts.get(t.deployment_id, 0) + 1
            primary = self._primary()
            shown = []
            for d in reversed(self.deployments):
                d.moto["runningCount"] = counts.get(d.id, 0)
                d.moto["pendingCount"] = 0
                if d is primary:
                    d.moto["status"] = "PRIMARY"
                    shown.insert(0, d.moto)
                elif counts.get(d.id, 0):
                    d.moto["status"] = "ACTIVE"
                    shown.append(d.moto)
            self.svc.deployments = shown
            self.svc.running_count = sum(counts.values())
            self.svc.pending_count = 0

    def _primary(self) -> Deployment:
        """The deployment ECS is driving towards: the newest one, unless it was rolled back."""
        for d in reversed(self.deployments):
            # A canary rolled back hands PRIMARY back to blue; a failed rolling deployment stays
            # PRIMARY with rolloutState FAILED (as moto and the tool have always seen it).
            if not (d.strategy == "canary" and d.status.startswith("ROLLBACK")):
                return d
        return self.deployments[-1]

    def describe_service_snapshot(self) -> Any:
        with self.lock:
            snap = copy.copy(self.svc)
            snap.deployments = copy.deepcopy(self.svc.deployments)
            return snap

    # ------------------------------------------------------------------ UpdateService(forceNewDeployment)

    def force_new_deployment(self) -> None:
        """Called inside the UpdateService request, after moto renamed its deployment: the new
        deployment is IN_PROGRESS before the call returns, as on real ECS."""
        with self.lock:
            renamed = self.svc.deployments[0]
            new_id = renamed["id"]
            renamed["id"] = self._primary().id  # moto renamed the PRIMARY in place; put it back
            for d in self.deployments:
                if d.status in IN_FLIGHT:
                    d.superseded = True
                    d.status, d.status_reason = "STOPPED", "Superseded by a newer service deployment."
                    d.stopped_at = d.updated_at = utcnow()
            if self.plan.strategy == "canary":
                group = next(g for g in GROUPS if g != self.production_group)
            else:
                group = self.production_group
            sources = []
            for t in self.running():
                if t.revision_arn not in sources:
                    sources.append(t.revision_arn)
            now = utcnow()
            moto = {**renamed, "id": new_id, "status": "PRIMARY", "rolloutState": "IN_PROGRESS",
                    "rolloutStateReason": f"ECS deployment {new_id} in progress.", "runningCount": 0,
                    "pendingCount": 0, "failedTasks": 0, "desiredCount": self.svc.desired_count,
                    "createdAt": now, "updatedAt": now}
            d = Deployment(id=new_id, arn=self._deployment_arn(), revision_arn=self._revision_arn(),
                           source_revisions=sources, group=group, source_group=self.production_group,
                           strategy=self.plan.strategy, moto=moto, desired=self.svc.desired_count,
                           status="IN_PROGRESS", started_at=now, created_at=now,
                           fail_tasks=self.plan.fail_first and self._first_forced)
            d.status_reason = "Service deployment in progress."
            if self.plan.strategy == "canary":
                d.alarms_status = "MONITORING" if self.plan.alarm_names else "DISABLED"
            self._first_forced = False
            self.deployments.append(d)
            self._queue.append(d)
            self._sync()
        self._emit("SERVICE_DEPLOYMENT_IN_PROGRESS", "INFO", d.id, f"ECS deployment {d.id} in progress.")
        self._wake.set()

    # ------------------------------------------------------------------ the deployment worker

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.2)
            self._wake.clear()
            while not self._stop.is_set():
                with self.lock:
                    if not self._queue:
                        break
                    d = self._queue.pop(0)
                    if d.superseded:
                        continue
                try:
                    (self._canary if d.strategy == "canary" else self._roll)(d)
                except Exception as exc:  # a bug here must not kill the world silently
                    self.log(f"sandbox ECS stand-in: deployment {d.id} crashed: {type(exc).__name__}: {exc}")

    def _sleep(self, seconds: float) -> bool:
        """Sleep; False if the world is stopping."""
        return not self._stop.wait(seconds)

    # ---- rolling

    def _roll(self, d: Deployment) -> None:
        victims = [t for t in self.running() if t.deployment_id != d.id]
        for _ in range(d.desired):
            if not self._sleep(self.plan.step) or d.superseded:
                return
            try:
                self._start_task(d, fail=d.fail_tasks)
            except RuntimeError:
                with self.lock:
                    d.failures += 1
                    d.moto["failedTasks"] = d.failures
                    if d.failures < self.plan.circuit_breaker_threshold:
                        continue
                    reason = "ECS deployment circuit breaker: tasks failed to start."
                    d.moto["rolloutState"] = "FAILED"
                    d.moto["rolloutStateReason"] = ("ECS deployment circuit breaker: tasks failed to start. "
                                                    "Rolling back to the previous deployment.")
                    d.cb_status = "TRIGGERED"
                    # The old tasks never left (minimum healthy 100 %): the rollback has nothing to move.
                    d.status, d.status_reason = "ROLLBACK_SUCCESSFUL", reason
                    d.rollback = {"reason": reason, "startedAt": utcnow(),
                                  "serviceRevisionArn": d.source_revisions[0] if d.source_revisions else None}
                    d.finished_at = d.updated_at = utcnow()
                    self._sync()
                self._emit("SERVICE_DEPLOYMENT_FAILED", "ERROR", d.id, reason)
                return
            if victims:  # one in, one out: never below the desired count (minimum healthy 100%)
                self._stop_task(victims.pop(0), f"Task replaced by deployment {d.id}")
        for v in victims:
            self._stop_task(v, f"Task replaced by deployment {d.id}")
        with self.lock:
            if d.superseded:
                return
            d.moto["rolloutState"] = "COMPLETED"
            d.moto["rolloutStateReason"] = f"ECS deployment {d.id} completed."
            d.status, d.status_reason = "SUCCESSFUL", "Service deployment completed."
            d.cb_status = "MONITORING_COMPLETE"
            d.finished_at = d.updated_at = utcnow()
            self._sync()
        self._emit("SERVICE_DEPLOYMENT_COMPLETED", "INFO", d.id, f"ECS deployment {d.id} completed.")

    # ---- canary

    def _stage(self, d: Deployment, stage: str) -> None:
        with self.lock:
            d.stage, d.updated_at = stage, utcnow()
        for hook in list(self.stage_hooks):
            hook(d.id, stage)

    def _weights(self, d: Deployment, *, prod: float | None = None, test: float | None = None) -> None:
        with self.lock:
            if prod is not None:
                d.prod_weight = prod
                self.front.set_weights("production", {d.source_group: 100.0 - prod, d.group: prod})
            if test is not None and "test" in self.front.listeners:
                d.test_weight = test
                self.front.set_weights("test", {d.source_group: 100.0 - test, d.group: test})
            d.updated_at = utcnow()

    def _watch(self, d: Deployment, seconds: float, *, alarms: bool = True) -> str | None:
        """Wait in the current stage; the reason to roll back if one came up, "superseded" or "stopping"."""
        end = time.monotonic() + seconds
        while True:
            if d.superseded:
                return "superseded"
            if d.stop_request:
                return d.stop_request
            if alarms and self.plan.alarm_names:
                firing = self._alarms_in_alarm()
                if firing:
                    with self.lock:
                        d.alarms_status, d.triggered = "TRIGGERED", firing
                    return f"ECS deployment alarm(s) in ALARM: {', '.join(firing)}"
            left = end - time.monotonic()
            if left <= 0:
                return None
            if not self._sleep(min(self.plan.alarm_poll, left)):
                return "stopping"

    def _alarms_in_alarm(self) -> list[str]:
        try:
            resp = self.cloudwatch.describe_alarms(AlarmNames=list(self.plan.alarm_names))
        except Exception:  # moto going away at shutdown
            return []
        return [a["AlarmName"] for a in resp.get("MetricAlarms", []) if a.get("StateValue") == "ALARM"]

    def _canary(self, d: Deployment) -> None:
        p = self.plan
        blue = [t for t in self.running() if t.group == d.source_group]
        strays = [t for t in self.running() if t.group != d.source_group]
        if strays:  # a superseded deployment left green tasks: reconcile to one revision first
            self._stage(d, "RECONCILE_SERVICE")
            self._weights(d, prod=0.0, test=0.0)
            for t in strays:
                self._stop_task(t, f"Reconciled by deployment {d.id}")
        steps: list[tuple[str, Callable[[], str | None]]] = []

        def pause() -> str | None:
            return self._watch(d, p.stage_pause, alarms=d.stage not in ("PRE_SCALE_UP",))

        def scale_up() -> str | None:
            for _ in range(d.desired):
                why = self._watch(d, p.step)
                if why:
                    return why
                try:
                    self._start_task(d, fail=d.fail_tasks)
                except RuntimeError:
                    with self.lock:
                        d.failures += 1
                        d.moto["failedTasks"] = d.failures
                        if d.failures >= p.circuit_breaker_threshold:
                            d.cb_status = "TRIGGERED"
                            return "ECS deployment circuit breaker: tasks failed to start."
            return None

        def test_shift() -> str | None:
            self._weights(d, test=100.0)
            return pause()

        def production_shift() -> str | None:
            self._weights(d, prod=p.canary_percent)
            why = self._watch(d, p.canary_bake)
            if why:
                return why
            self._weights(d, prod=100.0)
            return pause()

        def bake() -> str | None:
            return self._watch(d, p.bake)

        steps = [("PRE_SCALE_UP", pause), ("SCALE_UP", scale_up), ("POST_SCALE_UP", pause),
                 ("TEST_TRAFFIC_SHIFT", test_shift), ("POST_TEST_TRAFFIC_SHIFT", pause),
                 ("PRODUCTION_TRAFFIC_SHIFT", production_shift), ("POST_PRODUCTION_TRAFFIC_SHIFT", pause),
                 ("BAKE_TIME", bake)]
        for stage, work in steps:
            self._stage(d, stage)
            why = work()
            if why in ("superseded", "stopping"):
                return
            if why:
                self._roll_back(d, why, blue)
                return
        self._stage(d, "CLEAN_UP")
        for t in blue:
            self._stop_task(t, f"Task replaced by deployment {d.id}")
        with self.lock:
            if d.superseded:
                return
            self.production_group = d.group
            d.moto["rolloutState"] = "COMPLETED"
            d.moto["rolloutStateReason"] = f"ECS deployment {d.id} completed."
            d.status, d.status_reason = "SUCCESSFUL", "Service deployment completed."
            d.alarms_status = "MONITORING_COMPLETE" if p.alarm_names else "DISABLED"
            d.cb_status = "MONITORING_COMPLETE"
            d.finished_at = d.updated_at = utcnow()
            self._sync()
        self._emit("SERVICE_DEPLOYMENT_COMPLETED", "INFO", d.id, f"ECS deployment {d.id} completed.")

    def _roll_back(self, d: Deployment, reason: str, blue: list[EcsTask]) -> None:
        """Traffic back to blue at once, then stop green: ECS's rollback during a canary."""
        requested = reason.startswith("ROLLBACK")
        source = self._deployment_of(d.source_revisions[0]) if d.source_revisions else None
        with self.lock:
            d.status = "ROLLBACK_IN_PROGRESS"
            d.status_reason = reason
            d.rollback = {"reason": reason, "startedAt": utcnow(),
                          "serviceRevisionArn": d.source_revisions[0] if d.source_revisions else None}
            d.moto["rolloutState"] = "FAILED"
            d.moto["rolloutStateReason"] = reason
            if source is not None:
                source.moto["rolloutState"] = "IN_PROGRESS"
                source.moto["rolloutStateReason"] = f"ECS deployment {source.id} in progress (rollback)."
            self._weights(d, prod=0.0, test=0.0)
            self._sync()
        if not requested:
            self._emit("SERVICE_DEPLOYMENT_FAILED", "ERROR", d.id, reason)
        back_to = source.id if source is not None else "?"
        cause = ("rollback requested" if requested else "circuit breaker" if "circuit breaker" in reason
                 else "alarms")
        self._emit("SERVICE_DEPLOYMENT_IN_PROGRESS", "INFO", back_to,
                   f"ECS deployment {cause}: rolling back to deploymentId {back_to}.")
        for t in self.running(d.id):
            self._stop_task(t, f"Rolled back: {reason}")
        with self.lock:
            d.status = "ROLLBACK_SUCCESSFUL"
            d.finished_at = d.updated_at = utcnow()
            if source is not None:
                source.moto["rolloutState"] = "COMPLETED"
                source.moto["rolloutStateReason"] = f"ECS deployment {source.id} completed."
            self._sync()
        self._emit("SERVICE_DEPLOYMENT_COMPLETED", "INFO", back_to, f"ECS deployment {back_to} completed.")

    def _deployment_of(self, revision_arn: str) -> Deployment | None:
        return next((x for x in self.deployments if x.revision_arn == revision_arn), None)

    # ------------------------------------------------------------------ the service-deployment API

    def find(self, arn: str) -> Deployment | None:
        with self.lock:
            return next((d for d in self.deployments if d.arn == arn), None)

    def _revision_summary(self, revision: str, *, target: Deployment, is_target: bool) -> dict:
        running = [t for t in self.running() if t.revision_arn == revision]
        if is_target:
            requested = 0 if target.status.startswith("ROLLBACK") else target.desired
        else:
            requested = 0 if target.status == "SUCCESSFUL" else target.desired
        out: dict[str, Any] = {"arn": revision, "requestedTaskCount": requested,
                               "runningTaskCount": len(running), "pendingTaskCount": 0}
        if target.strategy == "canary":
            w_prod, w_test = target.prod_weight, target.test_weight
            out["requestedProductionTrafficWeight"] = w_prod if is_target else 100.0 - w_prod
            out["requestedTestTrafficWeight"] = w_test if is_target else 100.0 - w_test
        return out

    def describe(self, d: Deployment) -> dict:
        with self.lock:
            cfg = copy.deepcopy(self.deployment_config)
            out: dict[str, Any] = {
                "serviceDeploymentArn": d.arn, "serviceArn": self.service_arn, "clusterArn": self.cluster_arn,
                "createdAt": d.created_at, "startedAt": d.started_at, "updatedAt": d.updated_at,
                "sourceServiceRevisions": [self._revision_summary(r, target=d, is_target=False)
                                           for r in d.source_revisions],
                "targetServiceRevision": self._revision_summary(d.revision_arn, target=d, is_target=True),
                "status": d.status, "statusReason": d.status_reason, "deploymentConfiguration": cfg,
                "deploymentCircuitBreaker": {"status": d.cb_status, "failureCount": d.failures,
                                             "threshold": self.plan.circuit_breaker_threshold},
                "alarms": {"status": d.alarms_status, "alarmNames": list(self.plan.alarm_names),
                           "triggeredAlarmNames": list(d.triggered)},
            }
            if d.strategy == "canary" and d.stage:
                out["lifecycleStage"] = d.stage
            if d.finished_at:
                out["finishedAt"] = d.finished_at
            if d.stopped_at:
                out["stoppedAt"] = d.stopped_at
            if d.rollback:
                out["rollback"] = {k: v for k, v in d.rollback.items() if v is not None}
            return out

    def brief(self, d: Deployment) -> dict:
        with self.lock:
            out = {"serviceDeploymentArn": d.arn, "serviceArn": self.service_arn, "clusterArn": self.cluster_arn,
                   "createdAt": d.created_at, "startedAt": d.started_at, "targetServiceRevisionArn": d.revision_arn,
                   "status": d.status, "statusReason": d.status_reason}
            if d.finished_at:
                out["finishedAt"] = d.finished_at
            return out

    def list_deployments(self, *, status: list[str] | None, after: dt.datetime | None,
                         before: dt.datetime | None) -> list[Deployment]:
        with self.lock:
            out = []
            for d in reversed(self.deployments):  # newest first
                if status and d.status not in status:
                    continue
                if after and d.created_at < after:
                    continue
                if before and d.created_at > before:
                    continue
                out.append(d)
            return out

    def stop_deployment(self, arn: str, stop_type: str) -> None:
        d = self.find(arn)
        if d is None:
            raise StandInError("ServiceDeploymentNotFoundException", f"Service deployment {arn} not found.")
        if stop_type != "ROLLBACK":
            raise StandInError("InvalidParameterException", f"stopType {stop_type!r} is not valid: use ROLLBACK.")
        if d.strategy != "canary":
            raise StandInError("UnsupportedFeatureException",
                               "the sandbox models StopServiceDeployment(ROLLBACK) for canary deployments only")
        with self.lock:
            if d.status != "IN_PROGRESS" or d.stop_request:
                raise StandInError("ConflictException",
                                   f"Service deployment {arn} is {d.status}: only an ongoing deployment can be stopped.")
            d.status = "ROLLBACK_REQUESTED"
            d.status_reason = "ROLLBACK requested by StopServiceDeployment."
            d.stop_request = "ROLLBACK requested by StopServiceDeployment."
            d.updated_at = utcnow()

    # ------------------------------------------------------------------ ListTasks / DescribeTasks

    def owns_cluster(self, cluster: str | None) -> bool:
        return cluster in (self.cluster, self.cluster_arn)

    def list_tasks(self, *, service: str | None, desired_status: str | None, started_by: str | None,
                   family: str | None) -> list[str]:
        if service not in (None, self.service_name, self.service_arn):
            return []
        want = desired_status or "RUNNING"  # the API's default filter
        with self.lock:
            return [t.arn for t in self.tasks.values()
                    if t.desired_status == want
                    and (started_by is None or t.deployment_id == started_by)
                    and (family is None or f":task-definition/{family}:" in t.task_definition_arn)]

    def describe_tasks(self, ids: list[str]) -> tuple[list[dict], list[dict]]:
        found, failures = [], []
        with self.lock:
            for ref in ids:
                t = self.tasks.get(ref.rsplit("/", 1)[-1])
                if t is None:
                    failures.append({"arn": ref, "reason": "MISSING"})
                    continue
                found.append(self._task_shape(t))
        return found, failures

    def _task_shape(self, t: EcsTask) -> dict:
        out: dict[str, Any] = {
            "taskArn": t.arn, "clusterArn": self.cluster_arn, "taskDefinitionArn": t.task_definition_arn,
            "lastStatus": t.last_status, "desiredStatus": t.desired_status, "startedBy": t.deployment_id,
            "group": f"service:{self.service_name}", "launchType": "FARGATE", "platformVersion": "1.4.0",
            "platformFamily": "Linux", "createdAt": t.created_at, "startedAt": t.started_at,
            "availabilityZone": f"{self.region}a", "connectivity": "CONNECTED", "connectivityAt": t.created_at,
            "healthStatus": "HEALTHY" if t.last_status == "RUNNING" else "UNKNOWN", "version": 2 if t.stopped_at else 1,
            "cpu": None, "memory": None,
            "containers": [{"containerArn": f"arn:aws:ecs:{self.region}:{self.account}:container/{self.cluster}/"
                                            f"{t.id}/{uuid.UUID(t.id)}",
                            "taskArn": t.arn, "name": self.settings.container, "lastStatus": t.last_status,
                            "healthStatus": "HEALTHY" if t.last_status == "RUNNING" else "UNKNOWN"}],
        }
        if t.stopped_at:
            out.update(stoppedAt=t.stopped_at, stoppingAt=t.stopping_at, executionStoppedAt=t.stopped_at,
                       stoppedReason=t.stopped_reason, stopCode=t.stop_code)
        return {k: v for k, v in out.items() if v is not None}

    # ------------------------------------------------------------------ events

    def _emit(self, name: str, event_type: str, deployment_id: str, reason: str) -> None:
        """An `ECS Deployment State Change` event in the documented shape, to every listener."""
        now = utcnow()
        event = {
            "version": "0", "id": str(uuid.uuid4()), "detail-type": "ECS Deployment State Change",
            "source": "aws.ecs", "account": self.account, "time": iso(now), "region": self.region,
            "resources": [self.service_arn],
            "detail": {"eventType": event_type, "eventName": name, "deploymentId": deployment_id,
                       "updatedAt": iso(now), "reason": reason},
        }
        with self.lock:
            self.events.append(event)
            listeners = list(self.listeners)
        for cb in listeners:
            try:
                cb(event)
            except Exception as exc:  # a failing target must not stop ECS; EventBridge would retry/DLQ
                self.log(f"sandbox: deployment event listener failed: {type(exc).__name__}: {exc}")

    # ------------------------------------------------------------------ state for the admin view

    def state(self) -> dict:
        with self.lock:
            return {
                "strategy": self.plan.strategy,
                "production_target_group": self.production_group,
                "tasks": [{"id": t.id, "arn": t.arn, "mode": t.gateway.mode, "status": t.last_status,
                           "deployment": t.deployment_id, "revision": t.revision_arn, "target_group": t.group,
                           "stream": t.gateway.stream, "started_at": t.started_at.timestamp(),
                           "stopped_at": t.stopped_at.timestamp() if t.stopped_at else None}
                          for t in self.tasks.values()],
                "deployments": [{"id": d.id, "arn": d.arn, "status": d.status, "stage": d.stage,
                                 "rolloutState": d.moto.get("rolloutState"), "target_group": d.group,
                                 "production_weight": d.prod_weight, "test_weight": d.test_weight,
                                 "reason": d.status_reason} for d in self.deployments],
                "listeners": {n: {"port": lst.port, "weights": dict(lst.weights)}
                              for n, lst in self.front.listeners.items()},
                "events": list(self.events),
            }
