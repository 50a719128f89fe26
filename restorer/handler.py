"""ECS says a deployment of this service failed or is rolling back: undo an unfinished cutover's flip.

Invoked by EventBridge with an `ECS Deployment State Change` event (source aws.ecs, this service's
ARN in `resources`). It acts on `SERVICE_DEPLOYMENT_FAILED` (circuit breaker or deployment alarm)
and on `SERVICE_DEPLOYMENT_IN_PROGRESS` whose reason says the deployment is rolling back; anything
else is ignored. It only acts when the cutover journal holds an unfinished run (cutover_core's
UNFINISHED states); with no journal, or a finished run, it does nothing and says so.

What it does (the tool's own rollback uses the same restore rule, cutover_core.restore):
  1. the restore rule decides the write: the exact previous bytes when the live version is the run's,
     only `meshWritesEnforcement` put back when someone wrote after the run, nothing when the flag
     already says the previous mode; the new version is labelled `cutover-<run_id>-restorer`;
  2. the journal records it (RestoreRecord by="restorer", the reason naming the deployment and the
     event) and ends in `rolled_back`;
  3. with the rolling strategy it forces a new deployment: ECS's circuit-breaker rollback starts
     tasks that read the parameter *now*, possibly the strict value. With canary/blue_green ECS
     shifts traffic back to the blue tasks, which were started with the old value: no redeploy;
  4. it deletes the cutover lock if, and only if, the lock belongs to this run.

What it does not do: probe, wait for the redeploy, or touch any other parameter or service.
Environment: GATEWAY_PARAMETER, JOURNAL_PARAMETER, LOCK_PARAMETER, SERVICE_ARN, CLUSTER_NAME,
SERVICE_NAME (set by stacks/restorer.py).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cutover_core.journal import UNFINISHED, Journal, RestoreRecord, RunState, fit
from cutover_core.lock import LockBody
from cutover_core.restore import plan_restore

log = logging.getLogger("restorer")
log.setLevel(logging.INFO)

SOURCE = "aws.ecs"
DETAIL_TYPE = "ECS Deployment State Change"
FAILED = "SERVICE_DEPLOYMENT_FAILED"
IN_PROGRESS = "SERVICE_DEPLOYMENT_IN_PROGRESS"
ROLLING_BACK = "rolling back"  # in `detail.reason` of a rollback's IN_PROGRESS event
ENV_NAMES = ("GATEWAY_PARAMETER", "JOURNAL_PARAMETER", "LOCK_PARAMETER", "SERVICE_ARN", "CLUSTER_NAME",
             "SERVICE_NAME")
SSM_MAX_VERSIONS = 100


@dataclass(frozen=True)
class Settings:
    gateway_parameter: str
    journal_parameter: str
    lock_parameter: str
    service_arn: str
    cluster_name: str
    service_name: str

    @classmethod
    def from_env(cls, env: dict[str, str] | os._Environ[str] = os.environ) -> Settings:
        missing = [n for n in ENV_NAMES if not env.get(n)]
        if missing:
            raise RuntimeError(f"restorer misconfigured: environment variable(s) {', '.join(missing)} not set")
        return cls(*(env[n] for n in ENV_NAMES))


def handler(event: dict, context: Any) -> dict:
    """The Lambda entry point."""
    import boto3  # the Lambda runtime's; imported here so the module loads without it

    clients = {"ssm": boto3.client("ssm"), "ecs": boto3.client("ecs")}
    return restore(event, Settings.from_env(), clients, now=time.time)


def why_not(event: dict, settings: Settings) -> str | None:
    """None when the event asks for a restore, else why it is ignored."""
    if event.get("source") != SOURCE or event.get("detail-type") != DETAIL_TYPE:
        return f"not an ECS deployment state change ({event.get('source')}/{event.get('detail-type')})"
    if settings.service_arn not in (event.get("resources") or []):
        return f"not this service ({', '.join(event.get('resources') or []) or 'no resources'})"
    detail = event.get("detail") or {}
    name, reason = detail.get("eventName"), str(detail.get("reason") or "")
    if name == FAILED or (name == IN_PROGRESS and ROLLING_BACK in reason.lower()):
        return None
    return f"{name} is not a failed or rolling-back deployment ({reason or 'no reason'})"


def restore(event: dict, settings: Settings, clients: dict[str, Any], *, now: Callable[[], float]) -> dict:
    ssm, ecs = clients["ssm"], clients["ecs"]
    detail = event.get("detail") or {}
    deployment = detail.get("deploymentId", "?")
    ignored = why_not(event, settings)
    if ignored:
        return _done("ignored", ignored)

    raw = _get(ssm, settings.journal_parameter)
    if raw is None:
        return _done("nothing", f"no cutover journal at {settings.journal_parameter}: nothing to restore")
    try:
        j = Journal.from_json(raw["Value"])
    except (ValueError, TypeError, KeyError) as exc:
        # Not a journal this code can read (e.g. written by an older tool): acting on a guess could
        # undo the wrong thing. Fail loudly instead: the retries end in the dead-letter queue.
        raise RuntimeError(f"cannot read the cutover journal at {settings.journal_parameter}: {exc!r}; "
                           "check `python -m cutover status` and roll back by hand if needed") from exc
    ours = deployment == j.deployment_id or (j.deployment_id is not None and j.deployment_id in str(detail))
    if j.state not in UNFINISHED and not (j.state == RunState.WATCH_CUT_SHORT and ours):
        # A cut-short watch left its canary baking: if ECS rolls *that* deployment back, the tasks
        # serve the old mode again and the parameter must follow, or the next task starts strict.
        return _done("nothing", f"run {j.run_id} is {j.state.value}: nothing to restore (already handled)")
    if j.target != "strict":
        return _done("refused", f"run {j.run_id} moved to {j.target}: restoring {j.previous_mode} would re-break "
                     "the callers it was unbreaking; left for the operator")
    if j.parameter != settings.gateway_parameter:
        return _done("refused", f"run {j.run_id} changed {j.parameter}, not {settings.gateway_parameter}: "
                     "left for the operator")
    if j.previous_version is None:
        return _done("nothing", f"run {j.run_id} ({j.state.value}) recorded no previous version: it wrote nothing")

    # Take the run's lock first (a new token): from here on a tool process that is still alive fails
    # its token check before its next journal write, so it cannot overwrite this story; it then
    # reads the journal and reports the restorer's rollback.
    token = _take_lock(ssm, settings.lock_parameter, j.run_id, now())
    if token is None:
        return _done("refused", f"the cutover lock is held by another run than {j.run_id}: left for the operator")
    raw = _get(ssm, settings.journal_parameter)  # re-read under our lock: the tool may have written meanwhile
    j = Journal.from_json(raw["Value"]) if raw else j
    if j.state not in UNFINISHED and not (j.state == RunState.WATCH_CUT_SHORT and ours):
        lock = _release_lock(ssm, settings.lock_parameter, token)
        return _done("nothing", f"run {j.run_id} became {j.state.value} meanwhile: nothing to restore; lock {lock}")

    what = f"ECS deployment {deployment} {detail.get('eventName')}: {detail.get('reason') or 'no reason given'}"
    log.info("run %s is %s; %s", j.run_id, j.state.value, what)
    started = now()
    j.record("restorer", "started", started, what)
    current = ssm.get_parameter(Name=settings.gateway_parameter)["Parameter"]
    previous = ssm.get_parameter(Name=f"{settings.gateway_parameter}:{j.previous_version}")["Parameter"]
    current_version = int(current["Version"])
    plan = plan_restore(current_value=current["Value"], current_version=current_version,
                        previous_value=previous["Value"], previous_version=j.previous_version,
                        previous_mode=j.previous_mode, run_target=j.target, run_version=j.new_version)
    new_version: int | None = None
    if plan.value is not None:
        new_version = _put_gateway(ssm, settings.gateway_parameter, plan.value, j)
        _label(ssm, settings.gateway_parameter, new_version, f"cutover-{j.run_id}-restorer")
    done = now()
    j.restore = RestoreRecord(rule=plan.rule, by="restorer", at=done, from_version=current_version,
                              to_version=new_version, foreign_version=plan.foreign_version)
    j.rollback_reason = f"{j.rollback_reason}; then {what}" if j.rollback_reason else what
    moved = f"v{current_version} -> v{new_version}" if new_version else f"v{current_version} kept"
    j.record("restore", "done", done, f"restorer: {plan.rule}, {moved}: {plan.note}")
    if j.state != RunState.ROLLING_BACK:
        j.transition(RunState.ROLLING_BACK)
    # Saved before the redeploy: a retry after a crash here finds rolling_back and finishes the job.
    _save(ssm, settings.journal_parameter, j)

    redeployed = None
    if j.strategy == "rolling":
        svc = ecs.update_service(cluster=settings.cluster_name, service=settings.service_name,
                                 forceNewDeployment=True)["service"]
        primary = next((d for d in svc.get("deployments", []) if d.get("status") == "PRIMARY"), {})
        redeployed = primary.get("id", "?")
        j.rollback_deployment_id = redeployed
        j.record("rollback-redeploy", "started", now(),
                 f"restorer forced deployment {redeployed}: new tasks read the restored value")
    else:
        j.record("rollback-redeploy", "info", now(),
                 f"{j.strategy}: ECS shifts traffic back to the blue tasks, started with the old value; no redeploy")
    j.transition(RunState.ROLLED_BACK)
    _save(ssm, settings.journal_parameter, j)

    lock = _release_lock(ssm, settings.lock_parameter, token)
    return _done("restored", f"run {j.run_id}: {plan.rule} ({moved}); {plan.note}; lock {lock}",
                 rule=plan.rule, new_version=new_version, redeployed=redeployed, lock=lock)


# ---------------------------------------------------------------------- SSM


def _get(ssm: Any, name: str) -> dict | None:
    try:
        return ssm.get_parameter(Name=name)["Parameter"]
    except ssm.exceptions.ParameterNotFound:
        return None


def _put_gateway(ssm: Any, name: str, value: str, j: Journal) -> int:
    # Same type and tier as the run recorded; the description (the stack's) is left as it is.
    kwargs = dict(Name=name, Value=value, Type=j.parameter_type, Tier=j.parameter_tier, Overwrite=True)
    try:
        return int(ssm.put_parameter(**kwargs)["Version"])
    except ssm.exceptions.ParameterMaxVersionLimitExceeded:
        # SSM keeps 100 versions and refuses to drop a labelled oldest one (every cutover labels):
        # unlabel it, as the tool does, or no rollback could ever write again.
        _unlabel_oldest(ssm, name)
        return int(ssm.put_parameter(**kwargs)["Version"])


def _unlabel_oldest(ssm: Any, name: str) -> None:
    versions: list[dict] = []
    kwargs: dict[str, Any] = dict(Name=name, MaxResults=50)
    while True:
        page = ssm.get_parameter_history(**kwargs)
        versions += page.get("Parameters", [])
        if not page.get("NextToken"):
            break
        kwargs["NextToken"] = page["NextToken"]
    oldest = min(versions, key=lambda v: v["Version"])
    if oldest.get("Labels"):
        log.warning("unlabelling v%s (%s) of %s: SSM's %d-version limit", oldest["Version"],
                    ", ".join(oldest["Labels"]), name, SSM_MAX_VERSIONS)
        ssm.unlabel_parameter_version(Name=name, ParameterVersion=oldest["Version"], Labels=oldest["Labels"])


def _label(ssm: Any, name: str, version: int, label: str) -> None:
    try:
        ssm.label_parameter_version(Name=name, ParameterVersion=version, Labels=[label])
    except Exception as exc:  # a missing label must never undo a restore that happened
        log.warning("could not label v%s of %s as %s: %s", version, name, label, exc)


def _save(ssm: Any, name: str, j: Journal) -> None:
    ssm.put_parameter(Name=name, Value=fit(j), Type="String", Overwrite=True,
                      Description="brainstorm-router cutover journal (python -m cutover status)")


def _take_lock(ssm: Any, name: str, run_id: str, now: float) -> str | None:
    """Adopt the run's lock (or a free one) with a token of our own; None when another run holds it."""
    raw = _get(ssm, name)
    if raw is not None:
        try:
            holder = LockBody.from_json(raw["Value"]).run_id
        except (ValueError, TypeError):
            holder = "?"
        if holder != run_id:
            return None
    token = secrets.token_hex(8)
    body = LockBody(run_id=run_id, operator="restorer (ECS deployment state change)", token=token, ttl=900.0,
                    started=now, renewed_by="restorer")
    ssm.put_parameter(Name=name, Value=body.to_json(), Type="String", Overwrite=True)
    return token


def _release_lock(ssm: Any, name: str, token: str) -> str:
    """Delete the lock if it still carries our token (a process that took it from us keeps it)."""
    raw = _get(ssm, name)
    if raw is None:
        return "already free"
    try:
        body = LockBody.from_json(raw["Value"])
    except (ValueError, TypeError) as exc:
        return f"kept (unreadable body: {exc})"
    if body.token != token:
        return f"kept (held by {body.operator} for run {body.run_id})"
    try:
        ssm.delete_parameter(Name=name)
    except ssm.exceptions.ParameterNotFound:
        return "already free"
    return "released"


def _done(action: str, message: str, **extra: Any) -> dict:
    log.info("%s: %s", action, message)
    return {"action": action, "message": message, **extra}


if __name__ == "__main__":  # pragma: no cover - a local smoke run: python -m restorer.handler event.json
    import sys

    with open(sys.argv[1], encoding="utf-8") as fh:
        print(json.dumps(handler(json.load(fh), None), indent=2))
