"""ECS-native canary / blue-green: follow the service deployment, probe through the test
listener, hold the canary share, and stop the deployment (traffic back to the old tasks) first
when rolling back."""

from __future__ import annotations

import dataclasses
from urllib.parse import urlsplit

from cutover.outcome import (
    NeedsRollback,
    Outcome,
)
from cutover.parts import Parts
from cutover.probes import ProbeSpec
from cutover_core.journal import (
    FORWARD,
    Journal,
    RunState,
)
from envconfig import format_duration


class ServiceDeployments(Parts):

    def _service_deployment(self, j: Journal) -> dict:
        """The service deployment this run started (DescribeServiceDeployments), found once by
        ListServiceDeployments: the newest one in flight after the forced deployment."""
        if j.service_deployment is None:
            briefs = self.aws.list_service_deployments(*self.svc, statuses=("PENDING", "IN_PROGRESS"))
            if not briefs:
                briefs = self.aws.list_service_deployments(*self.svc)
            if not briefs:
                raise NeedsRollback("ECS lists no service deployment for the forced deployment")
            j.service_deployment = briefs[0]["serviceDeploymentArn"]
            self.journal.save(j)
        found = self.aws.describe_service_deployments([j.service_deployment])
        if not found:
            raise NeedsRollback(f"service deployment {j.service_deployment} not found")
        if j.first_strict_task is None and j.state in FORWARD and self._weights(found[0])[0] > 0:
            j.first_strict_task = self.clock()  # production traffic reaches tasks with the new value
        return found[0]

    @staticmethod
    def _weights(sd: dict) -> tuple[float, float]:
        target = sd.get("targetServiceRevision") or {}
        return (float(target.get("requestedProductionTrafficWeight") or 0.0),
                float(target.get("requestedTestTrafficWeight") or 0.0))

    @staticmethod
    def _not_stopped(sd: dict, when: str = "") -> dict:
        """The service deployment, unless ECS rolled it back or stopped it (then: roll back too)."""
        status = sd.get("status", "")
        if status.startswith("ROLLBACK") or status in ("STOPPED", "STOP_REQUESTED"):
            alarms = (sd.get("alarms") or {}).get("triggeredAlarmNames") or []
            raise NeedsRollback(f"ECS {status} the service deployment{when}: {sd.get('statusReason', '')}"
                                + (f" (alarm {', '.join(alarms)})" if alarms else ""))
        return sd

    def _follow_shift(self, j: Journal, out: Outcome, *, label: str, watching: bool) -> str:
        """Follow the service deployment until the new revision takes the test listener's traffic
        (the probes go there before production does) or production's (no test stage seen)."""
        deadline = self.clock() + self.cfg.cutover.redeploy_timeout
        while True:
            sd = self._not_stopped(self._service_deployment(j))
            status, stage = sd.get("status", ""), sd.get("lifecycleStage", "")
            prod, test = self._weights(sd)
            if status == "SUCCESSFUL" or test >= 100 or prod > 0:
                return (f"service deployment {stage or status}: test traffic {test:g}%, production {prod:g}% on the "
                        "new revision")
            now = self.clock()
            if now >= deadline:
                raise NeedsRollback(f"service deployment still {status} {stage} after "
                                    f"{format_duration(self.cfg.cutover.redeploy_timeout)}")
            self.ui.progress(f"{label}: {status} {stage}; production {prod:g}% / test {test:g}% on the new revision; "
                             f"{format_duration(deadline - now)} left")
            self._wait(j, out, min(self.poll, max(deadline - now, 0.01)), watching=watching)

    def _canary_guard(self, j: Journal) -> None:
        """Never more than the canary share of production on strict tasks before the probes passed."""
        if j.strategy == "rolling" or j.state != RunState.PROBING:
            return
        sd = self._not_stopped(self._service_deployment(j))  # ECS rolled back on its own: say so
        prod, _ = self._weights(sd)
        limit = self.cfg.service.deployment.canary_percent or 0.0
        if prod > limit:
            raise NeedsRollback(f"the deployment moved {prod:g}% of production traffic to the new revision before "
                                f"its probes passed (canary limit {limit:g}%)")

    def _new_tasks(self, j: Journal) -> list[dict]:
        """The running tasks started with the new value: all of them once a rolling deployment has
        completed; the new (green) revision's during a canary."""
        tasks = self.aws.running_tasks(*self.svc)
        if j.strategy == "rolling" or not j.deployment_id:
            return tasks
        return [t for t in tasks if t["startedBy"] == j.deployment_id] or tasks

    def _probe_spec(self, j: Journal) -> ProbeSpec:
        """Canary / blue-green: the test listener, which reaches only the new revision."""
        port = self.cfg.service.deployment.test_listener_port
        if j.strategy == "rolling" or not port:
            return self.probe_spec
        url = urlsplit(self.probe_spec.base_url)
        return dataclasses.replace(self.probe_spec, base_url=url._replace(netloc=f"{url.hostname}:{port}").geturl())

    def _stop_service_deployment(self, j: Journal, out: Outcome) -> bool:
        """StopServiceDeployment(ROLLBACK): ECS shifts traffic back to the old revision at once.
        True when the old revision serves again (also when ECS had already rolled back on its own);
        False when it is gone (the deployment finished its bake): the rollback then redeploys."""
        t = self.clock()
        sd = self._service_deployment(j)
        status = sd.get("status", "")
        if status in ("PENDING", "IN_PROGRESS"):
            self.aws.stop_service_deployment(j.service_deployment or "", "ROLLBACK")
            j.record("stop-deployment", "started", self.clock(), j.service_deployment or "")
            self.journal.save(j)
        elif not status.startswith("ROLLBACK") and status not in ("STOP_REQUESTED",):
            detail = f"service deployment {status}: the old revision is gone; redeploying the previous mode instead"
            j.record("stop-deployment", "skipped", self.clock(), detail)
            self.journal.save(j)
            self.ui.step("stop-deployment", "skipped", detail)
            return False
        deadline = self.clock() + self.cfg.cutover.redeploy_timeout
        while True:
            status = self._service_deployment(j).get("status", "")
            if status == "ROLLBACK_SUCCESSFUL":
                break
            if status in ("ROLLBACK_FAILED", "STOPPED", "SUCCESSFUL"):
                j.record("stop-deployment", "failed", self.clock(), f"service deployment {status}")
                self.journal.save(j)
                return False
            if self.clock() >= deadline:
                raise RuntimeError(f"the service deployment's rollback is still {status} after "
                                   f"{format_duration(self.cfg.cutover.redeploy_timeout)}")
            self.ui.progress(f"stop-deployment: {status}; traffic shifting back to the old revision")
            self._wait(j, out, min(self.poll, 1.0), watching=False)
        detail = "traffic back on the old revision (it started with the previous value)"
        j.record("stop-deployment", "done", self.clock(), detail)
        self.journal.save(j)
        self.ui.step("stop-deployment", "done", detail, self.clock() - t)
        return True

    def _follow_rollback_shift(self, j: Journal, out: Outcome) -> str:
        """The rollback's own canary deployment: done when all production traffic is on it (its
        bake, with the strict tasks standing by, need not be waited for)."""
        deadline = self.clock() + self.cfg.cutover.redeploy_timeout
        while True:
            briefs = self.aws.list_service_deployments(*self.svc)
            newest = briefs[0]["serviceDeploymentArn"] if briefs else None
            sd = self.aws.describe_service_deployments([newest])[0] if newest else {}
            status = sd.get("status", "")
            prod, _ = self._weights(sd)
            if newest != j.service_deployment and (status == "SUCCESSFUL" or prod >= 100):
                return f"service deployment {sd.get('lifecycleStage') or status}: production {prod:g}% on the previous mode"
            if newest != j.service_deployment and (status.startswith("ROLLBACK") or status == "STOPPED"):
                raise RuntimeError(f"ECS {status} the rollback's own deployment: {sd.get('statusReason', '')}")
            if self.clock() >= deadline:
                raise RuntimeError(f"the rollback's deployment is still {status or '?'} after "
                                   f"{format_duration(self.cfg.cutover.redeploy_timeout)}")
            self.ui.progress(f"rollback redeploy: {status} {sd.get('lifecycleStage', '')}; production {prod:g}%")
            self._wait(j, out, self.poll, watching=False)
