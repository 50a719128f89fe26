"""The restorer Lambda's handler, in process on moto (mock_aws), fed the documented event shape.

moto plays SSM (parameters, versions, labels, the 100-version limit) and ECS (update_service with
forceNewDeployment gives the PRIMARY deployment a new id, which is all moto does with it). What moto
does not play: EventBridge matching the rule's pattern (tests/test_stack.py asserts the pattern; the
handler re-checks the event itself, tested here) and Lambda's retries/DLQ.
"""

from __future__ import annotations

import ast
import copy
import json
import sys
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from cutover_core.flag import read_mode, with_mode
from cutover_core.journal import UNFINISHED, Journal, RunState
from cutover_core.lock import LockBody
from envconfig import load, render_document
from restorer import handler as restorer
from stacks.restorer import PACKAGES, stage_code

ROOT = Path(__file__).resolve().parent.parent
REGION = "us-east-1"
CFG = load("production")
GW, JOURNAL, LOCK = CFG.gateway.parameter_name, CFG.journal_parameter, CFG.lock_parameter
CLUSTER, SERVICE = CFG.service.cluster_name, CFG.service.service_name
RUN = "run-1795925624"
ADVISORY = render_document(CFG.gateway.document)
STRICT = with_mode(ADVISORY, "strict")

# The documented shape (ECS developer guide, "Amazon ECS service deployment state change events"),
# with this service's names. SERVICE_DEPLOYMENT_FAILED is sent when the circuit breaker or a
# deployment alarm fails the deployment.
SAMPLE_EVENT = {
    "version": "0",
    "id": "ddca6449-b258-46c0-8653-e0e3a6EXAMPLE",
    "detail-type": "ECS Deployment State Change",
    "source": "aws.ecs",
    "account": "123456789012",
    "time": "2026-11-29T03:58:10Z",
    "region": REGION,
    "resources": ["<the service ARN>"],
    "detail": {
        "eventType": "ERROR",
        "eventName": "SERVICE_DEPLOYMENT_FAILED",
        "deploymentId": "ecs-svc/4503485398734872345",
        "updatedAt": "2026-11-29T03:58:09Z",
        "reason": "ECS deployment alarm brainstorm-router-production-legitimate-mesh-write-403 is in ALARM: "
                  "rolling back to deploymentId ecs-svc/6405940160831029548.",
    },
}


def event(service_arn: str, name: str = "SERVICE_DEPLOYMENT_FAILED", reason: str | None = None) -> dict:
    e = copy.deepcopy(SAMPLE_EVENT)
    e["resources"] = [service_arn]
    e["detail"]["eventName"] = name
    e["eventType"] = "ERROR" if name.endswith("FAILED") else "INFO"
    if reason is not None:
        e["detail"]["reason"] = reason
    return e


class Clock:
    def __init__(self, t: float = 1_795_925_900.0) -> None:
        self.t = t

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


class World:
    """moto with the gateway parameter (v1 advisory, v2 strict by the run), journal and lock."""

    def __init__(self, *, strategy: str = "canary", state: RunState = RunState.WATCHING) -> None:
        self.ssm = boto3.client("ssm", region_name=REGION)
        self.ecs = boto3.client("ecs", region_name=REGION)
        self.ssm.put_parameter(Name=GW, Value=ADVISORY, Type="String")
        self.ssm.put_parameter(Name=GW, Value=STRICT, Type="String", Overwrite=True)
        self.journal = Journal(run_id=RUN, env="production", operator="arn:aws:iam::123456789012:user/op",
                               target="strict", previous_mode="advisory", parameter=GW, started=1_795_925_600.0,
                               previous_version=1, new_version=2, strategy=strategy, state=state)
        if state == RunState.INTERRUPTED:
            self.journal.interrupted_in = RunState.WATCHING
        self.journal.record("flip", "done", 1_795_925_624.0, "advisory -> strict: v1 -> v2")
        self.save_journal(self.journal)
        self.put_lock(RUN)
        self.ecs.create_cluster(clusterName=CLUSTER)
        self.ecs.register_task_definition(family="gw", containerDefinitions=[
            {"name": "gateway", "image": "public.ecr.aws/brainstorm/router:r20", "memory": 512}])
        svc = self.ecs.create_service(cluster=CLUSTER, serviceName=SERVICE, taskDefinition="gw", desiredCount=2)
        self.service_arn = svc["service"]["serviceArn"]
        self.settings = restorer.Settings(GW, JOURNAL, LOCK, self.service_arn, CLUSTER, SERVICE)
        self.clock = Clock()

    def save_journal(self, j: Journal) -> None:
        self.ssm.put_parameter(Name=JOURNAL, Value=json.dumps(j.to_dict()), Type="String", Overwrite=True)

    def put_lock(self, run_id: str) -> None:
        body = LockBody(run_id=run_id, operator="arn:aws:iam::123456789012:user/op", token="t0k3n", ttl=7200,
                        started=1_795_925_600.0)
        self.ssm.put_parameter(Name=LOCK, Value=body.to_json(), Type="String", Overwrite=True)

    def run(self, e: dict | None = None) -> dict:
        return restorer.restore(e or event(self.service_arn), self.settings,
                                {"ssm": self.ssm, "ecs": self.ecs}, now=self.clock)

    def gateway(self) -> dict:
        return self.ssm.get_parameter(Name=GW)["Parameter"]

    def read_journal(self) -> Journal:
        return Journal.from_json(self.ssm.get_parameter(Name=JOURNAL)["Parameter"]["Value"])

    def lock_exists(self) -> bool:
        try:
            self.ssm.get_parameter(Name=LOCK)
            return True
        except self.ssm.exceptions.ParameterNotFound:
            return False

    def labels(self, version: int) -> list[str]:
        history = self.ssm.get_parameter_history(Name=GW, MaxResults=50)["Parameters"]
        return next(v.get("Labels", []) for v in history if v["Version"] == version)

    def primary_deployment(self) -> str:
        svc = self.ecs.describe_services(cluster=CLUSTER, services=[SERVICE])["services"][0]
        return next(d["id"] for d in svc["deployments"] if d["status"] == "PRIMARY")


@pytest.fixture
def aws(monkeypatch):
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(k, v)
    with mock_aws():
        yield


# ---------------------------------------------------------------------- the restore rule, applied


def test_exact_bytes_come_back_when_the_live_version_is_the_runs(aws):
    w = World(strategy="canary")
    before = w.primary_deployment()
    result = w.run()
    assert result["action"] == "restored" and result["rule"] == "exact"
    live = w.gateway()
    assert live["Value"] == ADVISORY, "the exact v1 bytes"
    assert live["Version"] == 3 and result["new_version"] == 3
    assert w.labels(3) == [f"cutover-{RUN}-restorer"]
    j = w.read_journal()
    assert j.state == RunState.ROLLED_BACK
    r = j.restore
    assert (r.rule, r.by, r.from_version, r.to_version, r.foreign_version) == ("exact", "restorer", 2, 3, None)
    assert r.at > 1_795_925_900.0
    assert "ecs-svc/4503485398734872345" in j.rollback_reason and "SERVICE_DEPLOYMENT_FAILED" in j.rollback_reason
    assert [s.step for s in j.steps][-3:] == ["restorer", "restore", "rollback-redeploy"]
    assert not w.lock_exists(), "the run's lock is released"
    assert w.primary_deployment() == before, "canary: ECS shifts traffic back to blue; no redeploy"
    assert result["redeployed"] is None


def test_only_the_flag_comes_back_when_someone_wrote_after_the_run(aws):
    w = World()
    foreign = STRICT.replace("providers: 7", "providers: 8")
    assert foreign != STRICT
    w.ssm.put_parameter(Name=GW, Value=foreign, Type="String", Overwrite=True)   # v3, not the run's
    result = w.run()
    live = w.gateway()
    assert result["rule"] == "flag_only"
    assert live["Value"] == with_mode(foreign, "advisory"), "their document, only the flag put back"
    assert "providers: 8" in live["Value"] and read_mode(live["Value"]) == "advisory"
    assert live["Version"] == 4
    r = w.read_journal().restore
    assert (r.rule, r.from_version, r.to_version, r.foreign_version) == ("flag_only", 3, 4, 3)


def test_nothing_is_written_when_the_flag_already_says_the_previous_mode(aws):
    w = World()
    w.ssm.put_parameter(Name=GW, Value=ADVISORY.replace("providers: 7", "providers: 9"), Type="String",
                        Overwrite=True)  # v3: someone already went back by hand
    result = w.run()
    assert result["rule"] == "nothing" and result["new_version"] is None
    assert w.gateway()["Version"] == 3
    j = w.read_journal()
    assert j.state == RunState.ROLLED_BACK
    assert (j.restore.rule, j.restore.from_version, j.restore.to_version, j.restore.foreign_version) == \
        ("nothing", 3, None, 3)


def test_rolling_forces_a_new_deployment(aws):
    w = World(strategy="rolling")
    before = w.primary_deployment()
    result = w.run()
    assert w.gateway()["Value"] == ADVISORY
    after = w.primary_deployment()
    assert after != before, "the circuit breaker's rollback tasks may have read strict: redeploy"
    assert result["redeployed"] == after
    j = w.read_journal()
    assert j.rollback_deployment_id == after and j.state == RunState.ROLLED_BACK


@pytest.mark.parametrize("state", sorted(UNFINISHED, key=str))
def test_every_unfinished_state_is_rolled_back(aws, state):
    w = World(state=state)
    assert w.run()["action"] == "restored"
    assert w.read_journal().state == RunState.ROLLED_BACK
    assert w.gateway()["Value"] == ADVISORY


def test_a_lock_held_by_another_run_is_kept_and_nothing_is_done(aws):
    w = World()
    w.put_lock("run-of-someone-else")
    before = w.gateway()["Version"]
    result = w.run()
    assert result["action"] == "refused" and "held by another run" in result["message"]
    assert w.gateway()["Version"] == before, "it does not act under another run's lock"
    assert w.lock_exists()
    assert LockBody.from_json(w.ssm.get_parameter(Name=LOCK)["Parameter"]["Value"]).run_id == "run-of-someone-else"


def test_a_missing_lock_is_taken_for_the_restore_and_released(aws):
    w = World()
    w.ssm.delete_parameter(Name=LOCK)
    result = w.run()
    assert result["action"] == "restored" and result["lock"] == "released" and not w.lock_exists()


def test_the_restorer_takes_the_runs_lock_before_it_writes(aws):
    """A tool process still alive fails its token check before its next journal write."""
    w = World()
    seen = {}
    real_put = w.ssm.put_parameter

    def put(**kwargs):
        if kwargs["Name"] == GW and "token" not in seen:
            seen["token"] = LockBody.from_json(w.ssm.get_parameter(Name=LOCK)["Parameter"]["Value"]).token
        return real_put(**kwargs)
    w.ssm.put_parameter = put
    w.run()
    assert seen["token"] and seen["token"] != "t0k3n", "the lock carried the restorer's token, not the tool's"


# ---------------------------------------------------------------------- when it must not act


def _versions(w: World) -> tuple[int, int]:
    return w.gateway()["Version"], w.ssm.get_parameter(Name=JOURNAL)["Parameter"]["Version"]


def test_redelivery_is_idempotent(aws, caplog):
    w = World(strategy="rolling")
    first = w.run()
    assert first["action"] == "restored"
    deployment, versions = w.primary_deployment(), _versions(w)
    caplog.set_level("INFO", logger="restorer")
    second = w.run()
    assert second["action"] == "nothing" and "is rolled_back: nothing to restore" in second["message"]
    assert _versions(w) == versions, "no write to the parameter or the journal"
    assert w.primary_deployment() == deployment, "no second redeploy"
    assert "nothing to restore" in caplog.text


def test_a_finished_run_is_left_alone(aws):
    w = World()
    j = w.read_journal()
    j.transition(RunState.DONE)
    w.save_journal(j)
    versions = _versions(w)
    result = w.run()
    assert result["action"] == "nothing" and "is done" in result["message"]
    assert _versions(w) == versions and w.gateway()["Value"] == STRICT and w.lock_exists()


def test_no_journal_no_action(aws):
    w = World()
    w.ssm.delete_parameter(Name=JOURNAL)
    result = w.run()
    assert result["action"] == "nothing" and "no cutover journal" in result["message"]
    assert w.gateway()["Value"] == STRICT and w.gateway()["Version"] == 2 and w.lock_exists()


def test_an_unreadable_journal_fails_loudly_and_changes_nothing(aws):
    w = World()
    w.ssm.put_parameter(Name=JOURNAL, Value='{"run_id": "r", "state": "running"}', Type="String", Overwrite=True)
    with pytest.raises(RuntimeError, match="cannot read the cutover journal"):
        w.run()
    assert w.gateway()["Version"] == 2 and w.lock_exists()


def test_an_event_of_another_service_is_ignored(aws):
    w = World()
    other = w.service_arn.replace(SERVICE, "some-other-service")
    result = w.run(event(other))
    assert result["action"] == "ignored" and "not this service" in result["message"]
    assert w.gateway()["Version"] == 2 and w.read_journal().state == RunState.WATCHING and w.lock_exists()


@pytest.mark.parametrize("name, reason, acts", [
    ("SERVICE_DEPLOYMENT_FAILED", "ECS deployment circuit breaker: tasks failed to start.", True),
    ("SERVICE_DEPLOYMENT_IN_PROGRESS",
     "ECS deployment circuit breaker: rolling back to deploymentId ecs-svc/6405940160831029548.", True),
    ("SERVICE_DEPLOYMENT_IN_PROGRESS", "ECS deployment ecs-svc/4503485398734872345 in progress.", False),
    ("SERVICE_DEPLOYMENT_COMPLETED", "ECS deployment ecs-svc/4503485398734872345 completed.", False),
])
def test_only_failed_or_rolling_back_deployments_act(aws, name, reason, acts):
    w = World()
    result = w.run(event(w.service_arn, name, reason))
    assert (result["action"] == "restored") is acts
    assert (w.gateway()["Value"] == ADVISORY) is acts


def test_other_event_types_are_ignored(aws):
    w = World()
    e = event(w.service_arn)
    e["detail-type"] = "ECS Service Action"
    assert w.run(e)["action"] == "ignored"


def test_a_journal_for_another_parameter_is_refused(aws):
    w = World()
    j = w.read_journal()
    j.parameter = "/brainstorm-router/staging/gateway/config"
    w.save_journal(j)
    result = w.run()
    assert result["action"] == "refused" and w.gateway()["Version"] == 2


# ---------------------------------------------------------------------- SSM's 100-version limit


def test_a_labelled_oldest_version_at_the_limit_is_unlabelled_first(aws):
    w = World()
    w.ssm.label_parameter_version(Name=GW, ParameterVersion=1, Labels=["cutover-older-run-before"])
    for _ in range(98):  # v3..v100 (all strict)
        w.ssm.put_parameter(Name=GW, Value=STRICT, Type="String", Overwrite=True)
    with pytest.raises(w.ssm.exceptions.ParameterMaxVersionLimitExceeded):
        w.ssm.put_parameter(Name=GW, Value=STRICT, Type="String", Overwrite=True)
    j = w.read_journal()
    j.new_version = 100  # the run's write is the newest; the previous bytes are v1's (advisory)
    w.save_journal(j)
    result = w.run()
    assert result["rule"] == "exact" and w.gateway()["Version"] == 101 and w.gateway()["Value"] == ADVISORY


# ---------------------------------------------------------------------- the Lambda entry point and package


def test_the_entry_point_reads_its_settings_from_the_environment(aws, monkeypatch):
    w = World()
    for name, value in zip(restorer.ENV_NAMES, (GW, JOURNAL, LOCK, w.service_arn, CLUSTER, SERVICE), strict=True):
        monkeypatch.setenv(name, value)
    result = restorer.handler(event(w.service_arn), None)
    assert result["action"] == "restored" and w.gateway()["Value"] == ADVISORY
    monkeypatch.delenv("LOCK_PARAMETER")
    with pytest.raises(RuntimeError, match="LOCK_PARAMETER not set"):
        restorer.handler(event(w.service_arn), None)


def test_the_package_is_standard_library_boto3_and_our_own_code():
    allowed = set(sys.stdlib_module_names) | {"boto3", "botocore", "__future__", *PACKAGES}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                         else [])
                for name in names:
                    assert name.split(".")[0] in allowed, f"{path.relative_to(ROOT)} imports {name}"


def test_the_staged_asset_holds_the_two_packages_and_no_bytecode():
    staged = Path(stage_code())
    files = sorted(str(p.relative_to(staged)) for p in staged.rglob("*") if p.is_file())
    assert {f.split("/")[0] for f in files} == set(PACKAGES)
    assert "restorer/handler.py" in files and "cutover_core/restore.py" in files
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]
    for f in files:
        assert (staged / f).read_bytes() == (ROOT / f).read_bytes()


def test_a_cut_short_watch_is_restored_when_ecs_rolls_its_own_deployment_back(aws):
    w = World(state=RunState.WATCH_CUT_SHORT)
    w.journal.deployment_id = SAMPLE_EVENT["detail"]["deploymentId"]
    w.save_journal(w.journal)
    w.ssm.delete_parameter(Name=LOCK)  # the cut-short run finished and released its lock
    assert w.run()["action"] == "restored"
    assert w.gateway()["Value"] == ADVISORY and w.read_journal().state == RunState.ROLLED_BACK
    assert not w.lock_exists()


def test_a_cut_short_watch_is_left_alone_when_another_deployment_fails(aws):
    w = World(state=RunState.WATCH_CUT_SHORT)
    w.journal.deployment_id = "ecs-svc/1111111111111111111"  # not the one in the event
    w.save_journal(w.journal)
    assert w.run()["action"] == "nothing" and w.gateway()["Value"] == STRICT


def test_a_run_back_to_advisory_is_never_restored_to_strict(aws):
    w = World()
    w.journal.target, w.journal.previous_mode = "advisory", "strict"
    w.save_journal(w.journal)
    result = w.run()
    assert result["action"] == "refused" and "re-break" in result["message"]
    assert w.gateway()["Value"] == STRICT, "left as the operator's run wrote it"
