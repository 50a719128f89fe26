"""The synthesized CloudFormation: every must-have of the infrastructure, per construct."""

from __future__ import annotations

import json

import pytest
from aws_cdk import App
from aws_cdk.assertions import Match, Template
from cdk_nag import AwsSolutionsChecks

import envconfig as config
from envconfig import ConfigError, load
from stacks.gateway_config import render_document
from stacks.gateway_stack import GatewayStack

ENVS = ["production", "staging", "sandbox"]


# One worker synthesizes the stacks once for the whole module (pytest-xdist, --dist loadgroup).
pytestmark = pytest.mark.xdist_group("cdk")


@pytest.fixture(scope="module")
def stacks() -> dict[str, GatewayStack]:
    app = App()
    return {env: GatewayStack(app, config=load(env)) for env in ENVS}


@pytest.fixture(scope="module")
def prod(stacks) -> Template:
    return Template.from_stack(stacks["production"])


@pytest.fixture(scope="module")
def rolling(stacks) -> Template:
    """The sandbox environment deploys rolling (config/sandbox.yaml)."""
    assert load("sandbox").service.deployment.strategy == "rolling"
    return Template.from_stack(stacks["sandbox"])


def synth(config_dir, env: str) -> Template:
    return Template.from_stack(GatewayStack(App(), config=load(env, config_dir)))


def only(t: Template, kind: str, props: dict | None = None) -> tuple[str, dict]:
    found = t.find_resources(kind, {"Properties": props} if props else None)
    assert len(found) == 1, (kind, props, list(found))
    return next(iter(found.items()))


def test_one_stack_per_environment_named_after_it(stacks):
    assert [s.stack_name for s in stacks.values()] == [f"BrainstormRouter-{e}" for e in ENVS]


# ---------------------------------------------------------------- service


DEPLOYMENT_ALARMS = ["brainstorm-router-production-legitimate-mesh-write-403",
                     "brainstorm-router-production-alb-5xx", "brainstorm-router-production-unhealthy-hosts"]


def test_rolling_environment_keeps_the_circuit_breaker(rolling):
    _, svc = only(rolling, "AWS::ECS::Service")
    conf = svc["Properties"]["DeploymentConfiguration"]
    assert conf["DeploymentCircuitBreaker"] == {"Enable": True, "Rollback": True}
    assert (conf["MinimumHealthyPercent"], conf["MaximumPercent"]) == (100, 200)
    assert not {"Strategy", "CanaryConfiguration", "BakeTimeInMinutes"} & set(conf)
    assert conf["Alarms"] == {"AlarmNames": [n.replace("production", "sandbox") for n in DEPLOYMENT_ALARMS],
                              "Enable": True, "Rollback": True}
    assert "AdvancedConfiguration" not in svc["Properties"]["LoadBalancers"][0]
    assert len(rolling.find_resources("AWS::ElasticLoadBalancingV2::TargetGroup")) == 1
    rolling.resource_count_is("AWS::ElasticLoadBalancingV2::ListenerRule", 0)


def test_production_deploys_by_ecs_native_canary(prod):
    cfg = load("production")
    _, svc = only(prod, "AWS::ECS::Service", {"ServiceName": "brainstorm-router-production-fargate"})
    props = svc["Properties"]
    assert (props["DesiredCount"], props["LaunchType"], props["HealthCheckGracePeriodSeconds"]) == (2, "FARGATE", 120)
    assert props.get("DeploymentController", {"Type": "ECS"}) == {"Type": "ECS"}
    conf = props["DeploymentConfiguration"]
    assert conf["Strategy"] == "CANARY"
    assert conf["CanaryConfiguration"] == {"CanaryPercent": 10, "CanaryBakeTimeInMinutes": 5}
    assert conf["BakeTimeInMinutes"] == 30 and conf["BakeTimeInMinutes"] * 60 >= cfg.cutover.watch
    assert conf["DeploymentCircuitBreaker"] == {"Enable": True, "Rollback": True}
    assert conf["Alarms"] == {"AlarmNames": DEPLOYMENT_ALARMS, "Enable": True, "Rollback": True}
    assert list(cfg.observability.deployment_alarms) == DEPLOYMENT_ALARMS
    # The alarms it names exist in the stack, and the service is created after them.
    alarms = prod.find_resources("AWS::CloudWatch::Alarm")
    by_name = {a["Properties"]["AlarmName"]: lid for lid, a in alarms.items()}
    assert set(DEPLOYMENT_ALARMS) <= set(by_name)
    assert {by_name[n] for n in DEPLOYMENT_ALARMS} <= set(svc["DependsOn"])
    prod.has_resource_properties("AWS::ECS::Cluster", {"ClusterName": "brainstorm-router-production"})


def test_alternate_target_group_listener_rules_and_infrastructure_role(prod):
    _, svc = only(prod, "AWS::ECS::Service")
    (lb,) = svc["Properties"]["LoadBalancers"]
    adv = lb["AdvancedConfiguration"]
    blue, green = lb["TargetGroupArn"]["Ref"], adv["AlternateTargetGroupArn"]["Ref"]
    groups = prod.find_resources("AWS::ElasticLoadBalancingV2::TargetGroup")
    assert set(groups) == {blue, green}, "exactly two target groups: blue and green"
    rules = prod.find_resources("AWS::ElasticLoadBalancingV2::ListenerRule")
    listeners = prod.find_resources("AWS::ElasticLoadBalancingV2::Listener")
    prod_rule, test_rule = rules[adv["ProductionListenerRule"]["Ref"]], rules[adv["TestListenerRule"]["Ref"]]
    for rule, port in ((prod_rule, 443), (test_rule, 8443)):
        p = rule["Properties"]
        assert listeners[p["ListenerArn"]["Ref"]]["Properties"]["Port"] == port
        assert p["Conditions"] == [{"Field": "path-pattern", "PathPatternConfig": {"Values": ["/*"]}}]
        (action,) = p["Actions"]
        assert action["Type"] == "forward"
        assert action["ForwardConfig"]["TargetGroups"] == [
            {"TargetGroupArn": {"Ref": blue}, "Weight": 100}, {"TargetGroupArn": {"Ref": green}, "Weight": 0}]
    role = prod.find_resources("AWS::IAM::Role")[adv["RoleArn"]["Fn::GetAtt"][0]]["Properties"]
    assert role["AssumeRolePolicyDocument"]["Statement"] == [
        {"Action": "sts:AssumeRole", "Effect": "Allow", "Principal": {"Service": "ecs.amazonaws.com"}}]
    assert json.dumps(role["ManagedPolicyArns"]).endswith(
        ':iam::aws:policy/AmazonECSInfrastructureRolePolicyForLoadBalancers"]]}]')
    assert "Policies" not in role


def test_listeners_are_https_with_mtls_passthrough_and_the_test_listener_has_its_own_port(prod, rolling):
    listeners = [x["Properties"] for x in prod.find_resources("AWS::ElasticLoadBalancingV2::Listener").values()]
    assert sorted(x["Port"] for x in listeners) == [443, load("production").service.deployment.test_listener_port]
    for x in listeners:
        assert x["Protocol"] == "HTTPS" and x["MutualAuthentication"] == {"Mode": "passthrough"}
        assert x["Certificates"] == [{"CertificateArn": load("production").service.certificate_arn}]
        assert [a["Type"] for a in x["DefaultActions"]] == ["forward"], "ECS refuses mixed action types"
    # Reachable like production (the probes run from the operator's machine).
    prod.has_resource_properties("AWS::EC2::SecurityGroup", {"SecurityGroupIngress": Match.array_with([
        Match.object_like({"CidrIp": "0.0.0.0/0", "FromPort": 8443, "ToPort": 8443})])})
    # Rolling: one listener, no plain HTTP.
    (only_listener,) = rolling.find_resources("AWS::ElasticLoadBalancingV2::Listener").values()
    assert only_listener["Properties"]["Port"] == 443


def test_stop_timeout_deregistration_delay_and_idle_timeout_come_from_request_timeout(prod, config_dir):
    def numbers(t: Template) -> tuple[int, set[str], str]:
        (task,) = t.find_resources("AWS::ECS::TaskDefinition").values()
        stop = task["Properties"]["ContainerDefinitions"][0]["StopTimeout"]
        drains = {a["Value"] for g in t.find_resources("AWS::ElasticLoadBalancingV2::TargetGroup").values()
                  for a in g["Properties"]["TargetGroupAttributes"] if a["Key"] == "deregistration_delay.timeout_seconds"}
        (alb,) = t.find_resources("AWS::ElasticLoadBalancingV2::LoadBalancer").values()
        idle = next(a["Value"] for a in alb["Properties"]["LoadBalancerAttributes"]
                    if a["Key"] == "idle_timeout.timeout_seconds")
        return stop, drains, idle

    assert load("production").service.request_timeout == 60
    assert numbers(prod) == (70, {"70"}, "70"), "60s requests + 10s margin, on both target groups"
    path = config_dir / "production.yaml"
    path.write_text(path.read_text().replace("request_timeout: 60s", "request_timeout: 95s"))
    stop, drains, idle = numbers(synth(config_dir, "production"))
    assert (stop, drains, idle) == (105, {"105"}, "105")
    assert stop <= 120, "Fargate's stopTimeout maximum"


def test_a_request_timeout_that_cannot_fit_fargates_stop_timeout_is_refused(config_dir):
    path = config_dir / "production.yaml"
    path.write_text(path.read_text().replace("request_timeout: 60s", "request_timeout: 2m"))
    with pytest.raises(ConfigError, match=r"2m \+ 10s shutdown margin = 130s > Fargate's 120s stopTimeout"):
        load("production", config_dir)


def test_synth_refuses_a_bake_shorter_than_the_watch(config_dir):
    path = config_dir / "production.yaml"
    path.write_text(path.read_text().replace("bake: 30m   ", "bake: 20m   "))
    with pytest.raises(ConfigError, match=r"service.deployment.bake: 20m is shorter than cutover.watch \(30m\)"):
        load("production", config_dir)


def test_blue_green_environment_synthesizes_without_canary_settings(config_dir):
    path = config_dir / "staging.yaml"
    text = path.read_text().replace("strategy: canary", "strategy: blue_green")
    text = "".join(line for line in text.splitlines(keepends=True) if "canary_percent" not in line
                   and "canary_bake" not in line)
    path.write_text(text)
    stack = GatewayStack(App(), config=load("staging", config_dir))
    t = Template.from_stack(stack)
    _, svc = only(t, "AWS::ECS::Service")
    conf = svc["Properties"]["DeploymentConfiguration"]
    assert conf["Strategy"] == "BLUE_GREEN" and conf["BakeTimeInMinutes"] == 30
    assert "CanaryConfiguration" not in conf and conf["DeploymentCircuitBreaker"]["Rollback"] is True
    assert "AdvancedConfiguration" in svc["Properties"]["LoadBalancers"][0]
    report = AwsSolutionsChecks().validate_scope(stack)
    assert report.success, [v.rule_name for v in report.violations]


def test_target_group_health_check(prod):
    prod.has_resource_properties("AWS::ElasticLoadBalancingV2::TargetGroup", {
        "HealthCheckPath": "/health", "Port": 8080, "TargetType": "ip"})


def test_container_gets_pool_size_and_gateway_config_secret(stacks, prod):
    prod.has_resource_properties("AWS::ECS::TaskDefinition", {
        "ContainerDefinitions": [Match.object_like({
            "Environment": Match.array_with([{"Name": "DATABASE_POOL_SIZE", "Value": "200"}]),
            "Secrets": [Match.object_like({"Name": "GATEWAY_CONFIG"})],
            "LogConfiguration": Match.object_like({"LogDriver": "awslogs"}),
        })],
    })
    # The secret is the gateway config parameter itself, not a copy.
    (task,) = prod.find_resources("AWS::ECS::TaskDefinition").values()
    secret = task["Properties"]["ContainerDefinitions"][0]["Secrets"][0]["ValueFrom"]
    (param_id,) = prod.find_resources("AWS::SSM::Parameter", {
        "Properties": {"Name": "/brainstorm-router/production/gateway/config"}})
    assert {"Ref": param_id} in secret["Fn::Join"][1]
    staging = Template.from_stack(stacks["staging"])
    staging.has_resource_properties("AWS::ECS::TaskDefinition", {"ContainerDefinitions": [Match.object_like({
        "Environment": Match.array_with([{"Name": "DATABASE_POOL_SIZE", "Value": "100"}])})]})


# ---------------------------------------------------------------- scaling


def _policies(t: Template) -> dict[str, dict]:
    by_metric = {}
    for p in t.find_resources("AWS::ApplicationAutoScaling::ScalingPolicy").values():
        conf = p["Properties"]["TargetTrackingScalingPolicyConfiguration"]
        predefined = conf.get("PredefinedMetricSpecification", {}).get("PredefinedMetricType")
        by_metric[predefined or "custom"] = conf
    return by_metric


def test_three_target_tracking_policies(prod, rolling):
    prod.has_resource_properties("AWS::ApplicationAutoScaling::ScalableTarget", {
        "MinCapacity": 2, "MaxCapacity": 4, "ScalableDimension": "ecs:service:DesiredCount"})
    by_metric = _policies(prod)
    assert set(by_metric) == {"ECSServiceAverageCPUUtilization", "ECSServiceAverageMemoryUtilization", "custom"}
    assert by_metric["ECSServiceAverageCPUUtilization"]["TargetValue"] == 60
    assert by_metric["ECSServiceAverageMemoryUtilization"]["TargetValue"] == 70
    # Derived from the measured ceiling, not written by hand: 1.75/s x 60 x (100 - 30) % = 73 per minute.
    assert by_metric["custom"]["TargetValue"] == 73
    assert all(c["ScaleInCooldown"] == 300 and c["ScaleOutCooldown"] == 60 for c in by_metric.values())
    # Rolling: the predefined ALBRequestCountPerTarget of its one target group, same derivation.
    rolling_policies = _policies(rolling)
    assert set(rolling_policies) == {"ECSServiceAverageCPUUtilization", "ECSServiceAverageMemoryUtilization",
                                     "ALBRequestCountPerTarget"}
    assert rolling_policies["ALBRequestCountPerTarget"]["TargetValue"] == 73


def test_request_scaling_follows_whichever_target_group_is_live(prod):
    """After each canary/blue-green deployment the other group serves production: the policy sums
    RequestCountPerTarget of both (the idle one reports 0) instead of watching one of them."""
    spec = _policies(prod)["custom"]["CustomizedMetricSpecification"]
    assert set(spec) == {"Metrics"}, "no single-metric keys left over"
    queries = {m["Id"]: m for m in spec["Metrics"]}
    assert queries["requests"] == {"Id": "requests", "Expression": "blue + green", "ReturnData": True,
                                   "Label": "requests per target (live group)"}
    groups = set()
    for qid in ("blue", "green"):
        q = queries[qid]
        assert q["ReturnData"] is False and q["MetricStat"]["Stat"] == "Sum"
        metric = q["MetricStat"]["Metric"]
        assert (metric["Namespace"], metric["MetricName"]) == ("AWS/ApplicationELB", "RequestCountPerTarget")
        dims = {d["Name"]: d["Value"] for d in metric["Dimensions"]}
        groups.add(dims["TargetGroup"]["Fn::GetAtt"][0])
    assert groups == set(prod.find_resources("AWS::ElasticLoadBalancingV2::TargetGroup"))


def test_pool_that_does_not_fit_fails_at_synth(config_dir):
    path = config_dir / "production.yaml"
    path.write_text(path.read_text().replace("  pool_size: 200", "  pool_size: 300"))
    with pytest.raises(ConfigError, match="pool_size 300 x 8 peak tasks"):
        load("production", config_dir)


# ---------------------------------------------------------------- gateway config


def test_gateway_config_parameter_holds_the_document(prod):
    doc = load("production").gateway.document
    prod.has_resource_properties("AWS::SSM::Parameter", {
        "Name": "/brainstorm-router/production/gateway/config",
        "Type": "String",
        "Value": render_document(doc),
    })
    assert "meshWritesEnforcement: advisory" in render_document(doc)


# ---------------------------------------------------------------- observability


LEGITIMATE_403_PATTERN = (
    '{ (($.status = 403) || ($.status = "403")) && ($.path = "/v1/agent/*") && ($.caller = "*") '
    '&& ($.caller != "") && (($.cutoverRunId NOT EXISTS) || ($.cutoverRunId IS NULL) || ($.cutoverRunId = "") '
    '|| ($.userAgent NOT EXISTS) || ($.userAgent IS NULL) || ($.userAgent != "brainstorm-cutover-probe/*")) }')


def test_log_group_and_metric_filters(prod):
    prod.has_resource_properties("AWS::Logs::LogGroup", {
        "LogGroupName": "/ecs/brainstorm-router-production", "RetentionInDays": 90})
    prod.has_resource_properties("AWS::Logs::MetricFilter", {
        "FilterPattern": '"mtls-advisory"',
        "MetricTransformations": [Match.object_like({"MetricName": "MtlsAdvisoryBypass"})]})
    prod.has_resource_properties("AWS::Logs::MetricFilter", {
        "FilterPattern": '{ ($.status = 403) && ($.path = "/v1/agent/*") }',
        "MetricTransformations": [Match.object_like({"MetricName": "MeshWrite403"})]})
    # tests/test_legitimate_403_filter.py puts this exact pattern through CloudWatch's semantics.
    prod.has_resource_properties("AWS::Logs::MetricFilter", {
        "FilterPattern": LEGITIMATE_403_PATTERN,
        "MetricTransformations": [{"MetricName": "LegitimateMeshWrite403", "MetricValue": "1", "DefaultValue": 0,
                                   "MetricNamespace": "BrainstormRouter/production"}]})


def test_legitimate_403_filter_uses_the_configured_field_names(config_dir):
    path = config_dir / "staging.yaml"
    path.write_text(path.read_text().replace("caller_field: caller ", "caller_field: authCaller ")
                    .replace("run_id_field: cutoverRunId", "run_id_field: x-run"))
    _, mf = only(synth(config_dir, "staging"), "AWS::Logs::MetricFilter",
                 {"MetricTransformations": [Match.object_like({"MetricName": "LegitimateMeshWrite403"})]})
    pattern = mf["Properties"]["FilterPattern"]
    assert '($.authCaller = "*") && ($.authCaller != "")' in pattern and "($.x-run NOT EXISTS)" in pattern
    assert "$.caller" not in pattern and "cutoverRunId" not in pattern


def test_a_field_name_cloudwatch_cannot_select_is_refused(config_dir):
    path = config_dir / "staging.yaml"
    path.write_text(path.read_text().replace("caller_field: caller ", "caller_field: 'auth caller' "))
    with pytest.raises(ConfigError, match=r"access_log.caller_field: 'auth caller' cannot be used"):
        synth(config_dir, "staging")


@pytest.mark.parametrize("suffix,metric", [("alb-5xx", "HTTPCode_Target_5XX_Count"),
                                           ("legitimate-mesh-write-403", "LegitimateMeshWrite403")])
def test_alarms_treat_missing_data_as_not_breaching(prod, suffix, metric):
    prod.has_resource_properties("AWS::CloudWatch::Alarm", {
        "AlarmName": f"brainstorm-router-production-{suffix}",
        "MetricName": metric,
        "TreatMissingData": "notBreaching",
    })


def test_one_legitimate_403_in_a_minute_is_an_alarm(prod):
    prod.has_resource_properties("AWS::CloudWatch::Alarm", {
        "AlarmName": load("production").observability.alarm_legitimate_403,
        "Namespace": "BrainstormRouter/production", "Statistic": "Sum", "Period": 60,
        "Threshold": 1, "EvaluationPeriods": 1, "DatapointsToAlarm": 1,
        "ComparisonOperator": "GreaterThanOrEqualToThreshold"})
    names = {a["Properties"]["AlarmName"] for a in prod.find_resources("AWS::CloudWatch::Alarm").values()}
    assert "brainstorm-router-production-mesh-write-403" not in names, "the all-403 alarm (probes included) is retired"


@pytest.mark.parametrize("suffix,metric,stat", [("unhealthy-hosts", "UnHealthyHostCount", "Maximum"),
                                                ("p95-latency", "TargetResponseTime", "p95")])
def test_target_group_alarms_watch_the_worst_of_blue_and_green(prod, rolling, suffix, metric, stat):
    _, alarm = only(prod, "AWS::CloudWatch::Alarm", {"AlarmName": f"brainstorm-router-production-{suffix}"})
    p = alarm["Properties"]
    assert p["TreatMissingData"] == "notBreaching"
    queries = {q["Id"]: q for q in p["Metrics"]}
    assert [q["Expression"] for q in queries.values() if "Expression" in q] == ["MAX([blue, green])"]
    groups = set()
    for qid in ("blue", "green"):
        ms = queries[qid]["MetricStat"]
        assert (ms["Metric"]["MetricName"], ms["Stat"]) == (metric, stat)
        groups |= {d["Value"]["Fn::GetAtt"][0] for d in ms["Metric"]["Dimensions"] if d["Name"] == "TargetGroup"}
    assert groups == set(prod.find_resources("AWS::ElasticLoadBalancingV2::TargetGroup"))
    # Rolling: the one target group's metric, as before.
    rolling.has_resource_properties("AWS::CloudWatch::Alarm", {
        "AlarmName": f"brainstorm-router-sandbox-{suffix}", "MetricName": metric, "TreatMissingData": "notBreaching"})


def test_p95_alarm_uses_the_p95_statistic(rolling):
    rolling.has_resource_properties("AWS::CloudWatch::Alarm", {
        "AlarmName": "brainstorm-router-sandbox-p95-latency", "ExtendedStatistic": "p95", "Threshold": 15})


def test_guard_alarm_names_match_the_cutover_config(prod):
    names = {a["Properties"]["AlarmName"] for a in prod.find_resources("AWS::CloudWatch::Alarm").values()}
    assert set(load("production").observability.guard_alarms) <= names


def test_dashboard_exists(prod):
    prod.resource_count_is("AWS::CloudWatch::Dashboard", 1)


# ---------------------------------------------------------------- operator policy


def _statements(prod: Template) -> dict[str, dict]:
    (policy,) = prod.find_resources("AWS::IAM::ManagedPolicy").values()
    return {s["Sid"]: s for s in policy["Properties"]["PolicyDocument"]["Statement"]}


def test_operator_policy_is_scoped(prod):
    st = _statements(prod)
    assert set(st) == {"GatewayConfig", "CutoverLockAndJournal", "Service", "ServiceDeployments", "Tasks", "TaskDetails",
                       "Logs",
                       "GuardAlarms", "WhoAmI"}
    assert "task/" in json.dumps(st["TaskDetails"]["Resource"]) and st["TaskDetails"]["Action"] == "ecs:DescribeTasks"
    assert "gateway/config" in json.dumps(st["GatewayConfig"]["Resource"])
    assert "cutover/*" in json.dumps(st["CutoverLockAndJournal"]["Resource"])
    service_id, _ = only(prod, "AWS::ECS::Service")
    assert st["Service"]["Resource"] == {"Ref": service_id}
    assert "ecs:ListServiceDeployments" in st["Service"]["Action"]
    assert st["ServiceDeployments"]["Action"] == ["ecs:DescribeServiceDeployments", "ecs:StopServiceDeployment"]
    assert json.dumps(st["ServiceDeployments"]["Resource"]).endswith(
        ':service-deployment/brainstorm-router-production/brainstorm-router-production-fargate/*"]]}')
    cluster_id, _ = only(prod, "AWS::ECS::Cluster")
    assert st["Tasks"]["Action"] == "ecs:ListTasks"
    assert st["Tasks"]["Condition"] == {"ArnEquals": {"ecs:cluster": {"Fn::GetAtt": [cluster_id, "Arn"]}}}
    assert st["Logs"]["Resource"] == {"Fn::GetAtt": [_logical_id(prod, "AWS::Logs::LogGroup",
                                                                 "/ecs/brainstorm-router-production"), "Arn"]}
    alarms = prod.find_resources("AWS::CloudWatch::Alarm")
    described = {alarms[r["Fn::GetAtt"][0]]["Properties"]["AlarmName"] for r in st["GuardAlarms"]["Resource"]}
    obs = load("production").observability
    assert described == {*obs.guard_alarms, obs.alarm_legitimate_403}
    wildcard = sorted(sid for sid, s in st.items() if s["Resource"] == "*")
    assert wildcard == ["Tasks", "WhoAmI"], "sts:GetCallerIdentity has no resource; ListTasks is held by ecs:cluster"


def _logical_id(t: Template, kind: str, name: str) -> str:
    (lid,) = t.find_resources(kind, {"Properties": {"LogGroupName": name}})
    return lid


def test_operator_policy_grants_exactly_what_the_tool_calls(prod):
    """Every AWS operation in cutover/aws.py, and nothing else, is in the policy."""
    import re

    from tests.conftest import ROOT
    source = (ROOT / "cutover" / "aws.py").read_text()
    used = {f"{client}:{''.join(w.title() for w in op.split('_'))}"
            for client, op in re.findall(r'self\._call\(self\.(\w+), "(\w+)"', source)}
    granted = set()
    for s in _statements(prod).values():
        granted |= set(s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
    assert used, "found the calls"
    assert granted == used, (sorted(used - granted), sorted(granted - used))


# ---------------------------------------------------------------- cdk-nag and synth facts


@pytest.mark.parametrize("env", ENVS)
def test_cdk_nag_aws_solutions_has_no_unacknowledged_findings(stacks, env):
    report = AwsSolutionsChecks().validate_scope(stacks[env])
    found = [f"{v.rule_name} at {[r.construct_path for r in v.violating_resources]}" for v in report.violations]
    assert report.success and not found, found


def test_cdk_nag_still_bites_without_an_acknowledgement():
    """The check above can fail: a bare stack with an open security group is reported."""
    from aws_cdk import Stack
    from aws_cdk import aws_ec2 as ec2
    stack = Stack(App(), "Probe")
    sg = ec2.SecurityGroup(stack, "Sg", vpc=ec2.Vpc(stack, "Vpc", nat_gateways=0,
                                                    subnet_configuration=[]), allow_all_outbound=True)
    sg.add_ingress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(22))
    report = AwsSolutionsChecks().validate_scope(stack)
    assert not report.success and any(v.rule_name.startswith("AwsSolutions-") for v in report.violations)


def test_no_context_lookups(stacks):
    for stack in stacks.values():
        assert not stack.node.try_get_context("availability-zones:account=unknown")
    assert config.load("production").network.availability_zones == ("us-east-1a", "us-east-1b")


def test_synth_with_bad_config_is_one_line_and_exit_2(config_dir):
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT
    path = config_dir / "staging.yaml"
    path.write_text(path.read_text().replace("  max_tasks: 2", "  max_tasks: 9"))
    proc = subprocess.run([sys.executable, "app.py"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "BRAINSTORM_CONFIG_DIR": str(config_dir)})
    assert proc.returncode == 2
    lines = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "staging.yaml: database.pool_size" in lines[0] and "RDS Proxy" in lines[0]


# ---------------------------------------------------------------- the restorer


def test_restorer_function_is_python_packaged_from_this_repository(prod):
    from restorer.handler import ENV_NAMES
    from stacks.restorer import RUNTIME
    service_id, _ = only(prod, "AWS::ECS::Service")
    _, fn = only(prod, "AWS::Lambda::Function")
    p = fn["Properties"]
    assert p["Runtime"] == RUNTIME.name == "python3.14" and p["Handler"] == "restorer.handler.handler"
    assert p["Code"]["S3Key"].endswith(".zip"), "a file asset (no Docker image)"
    assert p["Environment"]["Variables"] == {
        "GATEWAY_PARAMETER": "/brainstorm-router/production/gateway/config",
        "JOURNAL_PARAMETER": "/brainstorm-router/production/cutover/journal",
        "LOCK_PARAMETER": "/brainstorm-router/production/cutover/lock",
        "SERVICE_ARN": {"Ref": service_id},
        "CLUSTER_NAME": "brainstorm-router-production",
        "SERVICE_NAME": "brainstorm-router-production-fargate",
    }
    assert list(p["Environment"]["Variables"]) == list(ENV_NAMES)
    cfg = load("production")
    assert (cfg.journal_parameter, cfg.lock_parameter) == (p["Environment"]["Variables"]["JOURNAL_PARAMETER"],
                                                         p["Environment"]["Variables"]["LOCK_PARAMETER"])


def test_restorer_rule_matches_this_services_failed_or_rolling_back_deployments(prod):
    service_id, _ = only(prod, "AWS::ECS::Service")
    fn_id, _ = only(prod, "AWS::Lambda::Function")
    queue_id, _ = only(prod, "AWS::SQS::Queue")
    _, rule = only(prod, "AWS::Events::Rule")
    p = rule["Properties"]
    assert p["EventPattern"] == {
        "source": ["aws.ecs"],
        "detail-type": ["ECS Deployment State Change"],
        "resources": [{"Ref": service_id}],
        "detail": {"$or": [
            {"eventName": ["SERVICE_DEPLOYMENT_FAILED"]},
            {"eventName": ["SERVICE_DEPLOYMENT_IN_PROGRESS"], "reason": [{"wildcard": "*rolling back*"}]},
        ]},
    }
    (target,) = p["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": [fn_id, "Arn"]}
    assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": [queue_id, "Arn"]}}
    assert target["RetryPolicy"]["MaximumRetryAttempts"] >= 1


def test_restorer_dead_letter_queue_is_encrypted_ssl_only_and_used_by_the_function(prod):
    queue_id, queue = only(prod, "AWS::SQS::Queue")
    assert queue["Properties"]["SqsManagedSseEnabled"] is True
    _, policy = only(prod, "AWS::SQS::QueuePolicy")
    deny = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
    assert [(d["Action"], d["Condition"]) for d in deny] == [("sqs:*", {"Bool": {"aws:SecureTransport": "false"}})]
    _, fn = only(prod, "AWS::Lambda::Function")
    assert fn["Properties"]["DeadLetterConfig"] == {"TargetArn": {"Fn::GetAtt": [queue_id, "Arn"]}}


def test_restorer_role_is_least_privilege(prod):
    _, fn = only(prod, "AWS::Lambda::Function")
    role_id = fn["Properties"]["Role"]["Fn::GetAtt"][0]
    role = prod.find_resources("AWS::IAM::Role")[role_id]["Properties"]
    assert "ManagedPolicyArns" not in role, "no AWSLambdaBasicExecutionRole: its own log group only"
    (policy,) = [p["Properties"] for p in prod.find_resources("AWS::IAM::Policy").values()
                 if p["Properties"]["Roles"] == [{"Ref": role_id}]]
    statements = policy["PolicyDocument"]["Statement"]
    assert all(s["Resource"] != "*" and "*" not in json.dumps(s["Resource"]) for s in statements)
    by_sid = {s.get("Sid"): s for s in statements}
    gateway = json.dumps(by_sid["GatewayConfig"]["Resource"])
    assert gateway.endswith(':parameter/brainstorm-router/production/gateway/config"]]}')
    assert by_sid["CutoverJournal"]["Action"] == ["ssm:GetParameter", "ssm:PutParameter"]
    # It takes the run's lock (put) before it writes, and releases it (delete) by its own token.
    assert by_sid["CutoverLock"]["Action"] == ["ssm:GetParameter", "ssm:PutParameter", "ssm:DeleteParameter"]
    # Every SSM/ECS call the handler makes is granted (moto does not enforce IAM: this test does).
    import re

    from tests.conftest import ROOT
    source = (ROOT / "restorer" / "handler.py").read_text()
    called = {f"{svc}:{''.join(w.title() for w in op.split('_'))}"
              for svc, op in re.findall(r"\b(ssm|ecs)\.(\w+)\(", source) if op != "exceptions"}
    assert called, "found the calls"
    assert called <= {a for s in statements for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])}
    service_id, _ = only(prod, "AWS::ECS::Service")
    assert by_sid["ForceRedeploy"] == {"Sid": "ForceRedeploy", "Effect": "Allow", "Action": "ecs:UpdateService",
                                       "Resource": {"Ref": service_id}}
    actions = {a for s in statements for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])}
    assert actions == {"ssm:GetParameter", "ssm:PutParameter", "ssm:LabelParameterVersion", "ssm:GetParameterHistory",
                       "ssm:UnlabelParameterVersion", "ssm:DeleteParameter", "ecs:UpdateService",
                       "logs:CreateLogStream", "logs:PutLogEvents", "sqs:SendMessage"}


@pytest.mark.parametrize("env", ENVS)
def test_every_environment_has_its_restorer(stacks, env):
    t = Template.from_stack(stacks[env])
    t.resource_count_is("AWS::Lambda::Function", 1)
    t.resource_count_is("AWS::Events::Rule", 1)


# ---------------------------------------------------------------- CHANGE-ME placeholders synthesize


def test_placeholders_synthesize_as_they_are(prod):
    """The invented values stay visible in the template (make deploy refuses them; synth must not)."""
    cfg = load("production")
    assert "service.certificate_arn" in cfg.placeholders and "service.image" in cfg.placeholders
    for x in prod.find_resources("AWS::ElasticLoadBalancingV2::Listener").values():
        assert x["Properties"]["Certificates"] == [{"CertificateArn": "CHANGE-ME-acm-certificate-arn"}]
    (task,) = prod.find_resources("AWS::ECS::TaskDefinition").values()
    assert task["Properties"]["ContainerDefinitions"][0]["Image"] == "CHANGE-ME-container-image"
    prod.has_resource_properties("AWS::SSM::Parameter", {
        "Name": cfg.gateway.parameter_name,
        "Value": Match.string_like_regexp("placeholder: CHANGE-ME-live-document-not-pulled")})


def test_synth_needs_no_credentials_with_placeholders_present(tmp_path):
    """What CI runs: `app.py` with the shipped config (placeholders in production and staging), no AWS
    credentials or profile anywhere, every stack synthesized."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "BRAINSTORM_CONFIG_DIR"}
    env.update(AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
               CDK_OUTDIR=str(tmp_path / "out"))
    proc = subprocess.run([sys.executable, "app.py"], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("production", "staging", "sandbox"):
        template = (tmp_path / "out" / f"BrainstormRouter-{name}.template.json").read_text()
        assert ("CHANGE-ME-acm-certificate-arn" in template) == (name != "sandbox"), name
