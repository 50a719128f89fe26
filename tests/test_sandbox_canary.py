"""ECS-native canary in the sandbox, through plain boto3 against the world's moto server and real
HTTPS through the ALB stand-in: service-deployment APIs, lifecycle stages, test listener, canary
weights, StopServiceDeployment(ROLLBACK), deployment alarms, the legitimate-403 metric filter and
`ECS Deployment State Change` events. Time is scaled down (Plan.seconds_per_minute)."""

from __future__ import annotations

import http.client
import io
import json
import ssl
import threading
import time
from collections import Counter

import botocore.session
import pytest
from botocore.exceptions import ClientError

from cutover.report import ConsoleUi
from cutover.sandbox.alarms import is_legitimate_403, legitimate_403_alarm_name
from cutover.sandbox.ecs import STAGES
from cutover.sandbox.world import sandbox_world
from envconfig import load
from tests.conftest import until

pytestmark = pytest.mark.e2e
ECS_MODEL = botocore.session.get_session().get_service_model("ecs")
FAST = dict(seconds_per_minute=0.05, stage_pause=0.08, step=0.05, canary_percent=20.0)


@pytest.fixture(scope="module")
def cfg():
    return load("sandbox")


def canary_world(cfg, scenario: str = "clean", **plan):
    return sandbox_world(cfg, scenario=scenario, ui=ConsoleUi(io.StringIO()), strategy="canary",
                         plan={**FAST, **plan})


def names(world) -> dict:
    c = world.cfg.service
    return {"cluster": c.cluster_name, "service": c.service_name}


def deploy(world) -> tuple[str, str]:
    """Force a new deployment; (ECS deployment id, service deployment ARN)."""
    ecs = world.client("ecs")
    resp = ecs.update_service(**names(world), forceNewDeployment=True)
    primary = resp["service"]["deployments"][0]
    assert primary["status"] == "PRIMARY" and primary["rolloutState"] == "IN_PROGRESS", "in progress inside the call"
    listed = ecs.list_service_deployments(**names(world), status=["IN_PROGRESS"])["serviceDeployments"]
    assert len(listed) == 1
    return primary["id"], listed[0]["serviceDeploymentArn"]


def describe(world, arn: str) -> dict:
    return world.client("ecs").describe_service_deployments(serviceDeploymentArns=[arn])["serviceDeployments"][0]


def stage(world, arn: str, wanted: str, timeout: float = 30) -> dict:
    return until(lambda: (lambda d: d if d.get("lifecycleStage") == wanted else None)(describe(world, arn)), timeout)


def health(url: str, ca: str) -> str:
    """GET /health through a listener: which task answered."""
    host, port = url.removeprefix("https://").split(":")
    conn = http.client.HTTPSConnection(host, int(port), context=ssl.create_default_context(cafile=ca), timeout=5)
    try:
        conn.request("GET", "/health")
        return json.loads(conn.getresponse().read())["task"]
    finally:
        conn.close()


def groups(world) -> dict[str, set[str]]:
    """Running task ids per target group, from the ECS stand-in."""
    out: dict[str, set[str]] = {}
    for t in world.ecs.state()["tasks"]:
        if t["status"] == "RUNNING":
            out.setdefault(t["target_group"], set()).add(t["id"])
    return out


def members(shape_name: str) -> set[str]:
    return set(ECS_MODEL.shape_for(shape_name).members)


# ---------------------------------------------------------------- the API and the stages


def test_service_deployment_apis_have_the_documented_shapes_and_play_the_stages_in_order(cfg):
    # 0.3 s per empty stage: a 10 ms poll sees every stage even on a loaded 2-core machine.
    with canary_world(cfg, stage_pause=0.3) as w:
        events: list[dict] = []
        w.on_deployment_event(events.append)
        entered: list[str] = []  # every stage as the stand-in enters it: the order, whatever the poll sees
        w.ecs.on_stage(lambda _dep, stage: entered.append(stage))
        dep_id, arn = deploy(w)
        seen: list[tuple[str, str, float, float]] = []  # (stage, status, green prod weight, green test weight)
        while True:
            d = describe(w, arn)
            t = d["targetServiceRevision"]
            row = (d.get("lifecycleStage"), d["status"], t["requestedProductionTrafficWeight"],
                   t["requestedTestTrafficWeight"])
            if not seen or seen[-1] != row:
                seen.append(row)
            if d["status"] != "IN_PROGRESS":
                break
            time.sleep(0.01)
        assert entered == [s for s in STAGES if s != "RECONCILE_SERVICE"], entered
        stages = list(dict.fromkeys(s for s, *_ in seen))  # what the API showed: the same order, maybe gaps
        assert stages == [s for s in entered if s in stages] and len(stages) >= 3, stages
        assert seen[-1][:2] == ("CLEAN_UP", "SUCCESSFUL")
        weights = [(s, p, t) for s, _, p, t in seen]
        assert ("PRODUCTION_TRAFFIC_SHIFT", 20.0, 100.0) in weights, "the canary share first"
        assert ("PRODUCTION_TRAFFIC_SHIFT", 100.0, 100.0) in weights or ("BAKE_TIME", 100.0, 100.0) in weights
        assert all(p == 0.0 for s, p, _ in weights if STAGES.index(s) < STAGES.index("PRODUCTION_TRAFFIC_SHIFT"))
        assert all(t == 0.0 for s, _, t in weights if STAGES.index(s) < STAGES.index("TEST_TRAFFIC_SHIFT"))

        d = describe(w, arn)
        assert set(d) <= members("ServiceDeployment")
        assert {"serviceDeploymentArn", "serviceArn", "clusterArn", "createdAt", "startedAt", "finishedAt",
                "sourceServiceRevisions", "targetServiceRevision", "status", "statusReason", "lifecycleStage",
                "deploymentConfiguration", "deploymentCircuitBreaker", "alarms"} <= set(d)
        assert d["createdAt"].tzinfo is not None, "timestamps are timestamps, not strings"
        (source,) = d["sourceServiceRevisions"]
        assert set(source) == members("ServiceRevisionSummary") and set(d["targetServiceRevision"]) == set(source)
        assert source["requestedProductionTrafficWeight"] == 0.0 and source["runningTaskCount"] == 0
        conf = d["deploymentConfiguration"]
        assert conf["strategy"] == "CANARY" and conf["canaryConfiguration"]["canaryPercent"] == 20.0
        assert conf["alarms"]["alarmNames"][0] == legitimate_403_alarm_name(w.cfg) and conf["alarms"]["rollback"]
        assert d["alarms"]["status"] == "MONITORING_COMPLETE" and d["alarms"]["triggeredAlarmNames"] == []
        assert set(d["alarms"]) <= members("ServiceDeploymentAlarms")
        brief = w.client("ecs").list_service_deployments(**names(w))["serviceDeployments"]
        assert brief[0]["serviceDeploymentArn"] == arn and set(brief[0]) <= members("ServiceDeploymentBrief")
        assert len(brief) == 2 and brief[1]["status"] == "SUCCESSFUL", "the initial deployment is listed too"

        svc = w.client("ecs").describe_services(cluster=names(w)["cluster"], services=[names(w)["service"]])
        svc = svc["services"][0]
        assert [(x["id"], x["status"], x["rolloutState"]) for x in svc["deployments"]] == [
            (dep_id, "PRIMARY", "COMPLETED")]
        assert svc["deploymentConfiguration"]["strategy"] == "CANARY"
        assert [(e["detail"]["eventName"], e["detail"]["deploymentId"]) for e in events] == [
            ("SERVICE_DEPLOYMENT_IN_PROGRESS", dep_id), ("SERVICE_DEPLOYMENT_COMPLETED", dep_id)]


def test_describe_services_shows_blue_active_until_clean_up(cfg):
    with canary_world(cfg) as w:
        dep_id, arn = deploy(w)
        stage(w, arn, "BAKE_TIME")
        svc = w.client("ecs").describe_services(cluster=names(w)["cluster"], services=[names(w)["service"]])
        deps = svc["services"][0]["deployments"]
        assert [(x["status"], x["rolloutState"], x["runningCount"]) for x in deps] == [
            ("PRIMARY", "IN_PROGRESS", 2), ("ACTIVE", "COMPLETED", 2)]
        assert svc["services"][0]["runningCount"] == 4, "blue and green both run during the bake"


# ---------------------------------------------------------------- real traffic through the listeners


def test_the_test_listener_reaches_only_green_and_production_follows_the_canary_weight(cfg):
    # a 10 s canary bake: room to measure; 0.5 s per green task: the pre-shift look lands before the shift
    with canary_world(cfg, canary_bake_minutes=200, step=0.5) as w:
        blue = groups(w)[w.ecs.production_group]
        _, arn = deploy(w)
        assert {health(w.test_url, w.pki.ca_cert) for _ in range(6)} <= blue, "no test traffic shift yet"
        stage(w, arn, "PRODUCTION_TRAFFIC_SHIFT")
        green = (set().union(*groups(w).values())) - blue
        assert len(green) == 2
        assert {health(w.test_url, w.pki.ca_cert) for _ in range(20)} == green, "the test listener: green only"

        before = Counter(w.front.routed)
        sample = Counter("green" if health(w.front_url, w.pki.ca_cert) in green else "blue" for _ in range(100))
        after = Counter(w.front.routed)
        assert describe(w, arn)["lifecycleStage"] == "PRODUCTION_TRAFFIC_SHIFT", "measured inside the canary"
        routed = {g: after[("production", g)] - before[("production", g)] for g in ("tg-1", "tg-2")}
        share = routed[w.ecs.deployments[-1].group] / sum(routed.values())
        assert share == pytest.approx(0.20, abs=0.03), routed  # every production request in the window
        assert 10 <= sample["green"] <= 30, sample  # our own 100, interleaved with the callers' traffic
        w.client("ecs").stop_service_deployment(serviceDeploymentArn=arn, stopType="ROLLBACK")


def test_stop_service_deployment_rollback_sends_all_traffic_back_to_blue_at_once(cfg):
    with canary_world(cfg, bake_minutes=400) as w:  # a 20 s deployment bake: blue idles, still running
        ecs = w.client("ecs")
        blue = groups(w)[w.ecs.production_group]
        _, arn = deploy(w)
        stage(w, arn, "BAKE_TIME")
        green = set().union(*groups(w).values()) - blue
        assert {health(w.front_url, w.pki.ca_cert) for _ in range(10)} == green, "100 % green in the bake"
        assert ecs.stop_service_deployment(serviceDeploymentArn=arn, stopType="ROLLBACK")["serviceDeploymentArn"] == arn
        assert describe(w, arn)["status"] in ("ROLLBACK_REQUESTED", "ROLLBACK_IN_PROGRESS", "ROLLBACK_SUCCESSFUL")
        t0 = time.monotonic()
        d = until(lambda: (lambda x: x if x["status"] == "ROLLBACK_SUCCESSFUL" else None)(describe(w, arn)))
        assert time.monotonic() - t0 < 2, "traffic back in seconds, not a redeploy"
        assert {health(w.front_url, w.pki.ca_cert) for _ in range(10)} == blue
        assert {health(w.test_url, w.pki.ca_cert) for _ in range(4)} <= blue
        assert d["rollback"]["serviceRevisionArn"] == d["sourceServiceRevisions"][0]["arn"]
        assert d["targetServiceRevision"]["requestedProductionTrafficWeight"] == 0.0
        stopped = ecs.describe_tasks(cluster=names(w)["cluster"], tasks=sorted(green))["tasks"]
        assert {t["lastStatus"] for t in stopped} == {"STOPPED"}
        svc = ecs.describe_services(cluster=names(w)["cluster"], services=[names(w)["service"]])["services"][0]
        assert [(x["status"], x["rolloutState"], x["runningCount"]) for x in svc["deployments"]] == [
            ("PRIMARY", "COMPLETED", 2)]

        with pytest.raises(ClientError) as again:
            ecs.stop_service_deployment(serviceDeploymentArn=arn, stopType="ROLLBACK")
        assert again.value.response["Error"]["Code"] == "ConflictException"
        with pytest.raises(ClientError) as missing:
            ecs.stop_service_deployment(serviceDeploymentArn=arn + "x", stopType="ROLLBACK")
        assert missing.value.response["Error"]["Code"] == "ServiceDeploymentNotFoundException"
        unknown = ecs.describe_service_deployments(serviceDeploymentArns=[arn + "x"])
        assert unknown["failures"] == [{"arn": arn + "x", "reason": "MISSING"}]


# ---------------------------------------------------------------- alarms: ECS rolls back without the tool


def test_a_legitimate_403_fires_the_alarm_and_ecs_rolls_back_with_the_documented_events(cfg):
    with canary_world(cfg, scenario="unenrolled-caller", canary_bake_minutes=200) as w:
        events: list[dict] = []
        got = threading.Event()
        w.on_deployment_event(lambda e: (events.append(e), got.set()))
        ssm = w.client("ssm")
        name = w.cfg.gateway.parameter_name
        doc = ssm.get_parameter(Name=name)["Parameter"]["Value"]
        ssm.put_parameter(Name=name, Value=doc.replace("advisory", "strict"), Type="String", Overwrite=True)
        dep_id, arn = deploy(w)
        d = until(lambda: (lambda x: x if x["status"] == "ROLLBACK_SUCCESSFUL" else None)(describe(w, arn)))
        alarm = legitimate_403_alarm_name(w.cfg)
        assert d["alarms"] == {"status": "TRIGGERED", "alarmNames": list(w.plan.alarm_names),
                               "triggeredAlarmNames": [alarm]}
        assert alarm in d["statusReason"] and d["rollback"]["reason"] == d["statusReason"]
        assert d["lifecycleStage"] == "PRODUCTION_TRAFFIC_SHIFT", "caught in the canary bake"
        blue_id = w.ecs.deployments[0].id
        kinds = [(e["detail"]["eventName"], e["detail"]["eventType"], e["detail"]["deploymentId"]) for e in events]
        assert kinds == [("SERVICE_DEPLOYMENT_IN_PROGRESS", "INFO", dep_id),
                         ("SERVICE_DEPLOYMENT_FAILED", "ERROR", dep_id),
                         ("SERVICE_DEPLOYMENT_IN_PROGRESS", "INFO", blue_id),
                         ("SERVICE_DEPLOYMENT_COMPLETED", "INFO", blue_id)]
        failed = events[1]
        assert set(failed) == {"version", "id", "detail-type", "source", "account", "time", "region", "resources",
                               "detail"}
        assert (failed["detail-type"], failed["source"], failed["account"]) == (
            "ECS Deployment State Change", "aws.ecs", w.account)
        assert failed["resources"] == [w.ecs.service_arn] and alarm in failed["detail"]["reason"]
        assert set(failed["detail"]) == {"eventType", "eventName", "deploymentId", "updatedAt", "reason"}
        assert f"rolling back to deploymentId {blue_id}" in events[2]["detail"]["reason"]
        # the harm stayed at about the canary share, and the caller is served again by blue
        s = until(lambda: (lambda x: x if x["incidents"] and x["incidents"][0]["closed"] else None)(
            w.traffic.unenrolled.summary()))
        assert s["served"] > s["refused"] >= 1
        assert {t.mode for t in w.front.tasks} == {"advisory"}


def test_the_metric_filter_counts_only_legitimate_mesh_write_403s(cfg):
    def line(**kw) -> str:
        base = {"path": "/v1/agent/delegate", "status": 403, "caller": "brainstorm-cli", "userAgent": "cli/1",
                "cutoverRunId": ""}
        return json.dumps({**base, **kw})
    table = {
        line(): True,
        line(caller=""): False,                                   # unauthenticated noise
        line(status=401): False,
        line(path="/v1/chat/completions"): False,                 # not a mesh write
        # The tool's own lines carry BOTH marks; one alone is a caller who happens to look like it.
        line(cutoverRunId="run-1"): True,
        line(cutoverRunId="run-1", userAgent="brainstorm-cutover-probe/run-1"): False,
        line(userAgent="brainstorm-cutover-probe/run-1"): True,
        line(caller="cutover-sentinel", cutoverRunId="run-1", userAgent="brainstorm-cutover-probe/run-1"): False,
        "WARN [mtls-advisory] mesh write without client certificate": False,
        "INFO " + line(): True,                                   # a prefix before the JSON, as some loggers write
    }
    assert {m: is_legitimate_403(m, cfg) for m in table} == table


def test_the_alarm_goes_back_to_ok_one_period_after_the_last_legitimate_403(cfg):
    with canary_world(cfg, seconds_per_minute=0.02) as w:  # a 1-minute period lasts 1.2 s
        cw = w.client("cloudwatch")
        alarm = legitimate_403_alarm_name(w.cfg)

        def state() -> str:
            return cw.describe_alarms(AlarmNames=[alarm])["MetricAlarms"][0]["StateValue"]
        assert state() == "OK" or state() == "INSUFFICIENT_DATA"
        w.metric_filter.ingest("gateway/gateway/x", int(time.time() * 1000), json.dumps(
            {"path": "/v1/agent/delegate", "status": 403, "caller": "brainstorm-cli", "userAgent": "cli/1"}))
        assert state() == "ALARM"
        t0 = time.monotonic()
        until(lambda: state() == "OK")
        assert 0.5 <= time.monotonic() - t0 < 3  # the 1.2 s period counts from the ingest, a little before t0


def test_a_rolling_service_has_no_test_listener_and_refuses_a_stop_it_does_not_model(cfg):
    with sandbox_world(cfg, scenario="clean", ui=ConsoleUi(io.StringIO()), rollout_step=2) as w:
        assert w.test_url is None and w.strategy == "rolling"
        _, arn = deploy(w)
        assert describe(w, arn).get("lifecycleStage") is None
        with pytest.raises(ClientError) as exc:
            w.client("ecs").stop_service_deployment(serviceDeploymentArn=arn, stopType="ROLLBACK")
        assert exc.value.response["Error"]["Code"] == "UnsupportedFeatureException"
