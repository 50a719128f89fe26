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


@pytest.fixture(scope="module")
def stacks() -> dict[str, GatewayStack]:
    app = App()
    return {env: GatewayStack(app, config=load(env)) for env in ENVS}


@pytest.fixture(scope="module")
def prod(stacks) -> Template:
    return Template.from_stack(stacks["production"])


def test_one_stack_per_environment_named_after_it(stacks):
    assert [s.stack_name for s in stacks.values()] == [f"BrainstormRouter-{e}" for e in ENVS]


# ---------------------------------------------------------------- service


def test_service_deploys_safely(prod):
    prod.has_resource_properties("AWS::ECS::Service", {
        "ServiceName": "brainstorm-router-production-fargate",
        "DesiredCount": 2,
        "LaunchType": "FARGATE",
        "HealthCheckGracePeriodSeconds": 120,
        "DeploymentConfiguration": {
            "DeploymentCircuitBreaker": {"Enable": True, "Rollback": True},
            "MinimumHealthyPercent": 100,
            "MaximumPercent": 200,
        },
    })
    prod.has_resource_properties("AWS::ECS::Cluster", {"ClusterName": "brainstorm-router-production"})


def test_https_listener_uses_mtls_passthrough(prod):
    prod.has_resource_properties("AWS::ElasticLoadBalancingV2::Listener", {
        "Port": 443,
        "Protocol": "HTTPS",
        "MutualAuthentication": {"Mode": "passthrough"},
    })
    listeners = prod.find_resources("AWS::ElasticLoadBalancingV2::Listener")
    assert len(listeners) == 1, "no plain-HTTP listener"


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


def test_three_target_tracking_policies(prod):
    prod.has_resource_properties("AWS::ApplicationAutoScaling::ScalableTarget", {
        "MinCapacity": 2, "MaxCapacity": 4, "ScalableDimension": "ecs:service:DesiredCount"})
    policies = prod.find_resources("AWS::ApplicationAutoScaling::ScalingPolicy")
    by_metric = {}
    for p in policies.values():
        conf = p["Properties"]["TargetTrackingScalingPolicyConfiguration"]
        metric = conf["PredefinedMetricSpecification"]["PredefinedMetricType"]
        by_metric[metric] = conf
    assert set(by_metric) == {"ECSServiceAverageCPUUtilization", "ECSServiceAverageMemoryUtilization",
                              "ALBRequestCountPerTarget"}
    assert by_metric["ECSServiceAverageCPUUtilization"]["TargetValue"] == 60
    assert by_metric["ECSServiceAverageMemoryUtilization"]["TargetValue"] == 70
    assert by_metric["ALBRequestCountPerTarget"]["TargetValue"] == 180
    assert all(c["ScaleInCooldown"] == 300 and c["ScaleOutCooldown"] == 60 for c in by_metric.values())


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


def test_log_group_and_metric_filters(prod):
    prod.has_resource_properties("AWS::Logs::LogGroup", {
        "LogGroupName": "/ecs/brainstorm-router-production", "RetentionInDays": 90})
    prod.has_resource_properties("AWS::Logs::MetricFilter", {
        "FilterPattern": '"mtls-advisory"',
        "MetricTransformations": [Match.object_like({"MetricName": "MtlsAdvisoryBypass"})]})
    prod.has_resource_properties("AWS::Logs::MetricFilter", {
        "FilterPattern": '{ ($.status = 403) && ($.path = "/v1/agent/*") }',
        "MetricTransformations": [Match.object_like({"MetricName": "MeshWrite403"})]})


@pytest.mark.parametrize("suffix,metric", [("alb-5xx", "HTTPCode_Target_5XX_Count"),
                                           ("unhealthy-hosts", "UnHealthyHostCount"),
                                           ("p95-latency", "TargetResponseTime"),
                                           ("mesh-write-403", "MeshWrite403")])
def test_alarms_treat_missing_data_as_not_breaching(prod, suffix, metric):
    prod.has_resource_properties("AWS::CloudWatch::Alarm", {
        "AlarmName": f"brainstorm-router-production-{suffix}",
        "MetricName": metric,
        "TreatMissingData": "notBreaching",
    })


def test_p95_alarm_uses_the_p95_statistic(prod):
    prod.has_resource_properties("AWS::CloudWatch::Alarm", {
        "AlarmName": "brainstorm-router-production-p95-latency", "ExtendedStatistic": "p95", "Threshold": 15})


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
    assert set(st) == {"GatewayConfig", "CutoverLockAndJournal", "Service", "Tasks", "Logs", "GuardAlarms", "WhoAmI"}
    assert all("Fn::Join" in json.dumps(r) for r in st["Tasks"]["Resource"]), "scoped to the cluster"
    assert "gateway/config" in json.dumps(st["GatewayConfig"]["Resource"])
    assert "cutover/*" in json.dumps(st["CutoverLockAndJournal"]["Resource"])
    assert st["Service"]["Resource"] != "*" and "Ref" in json.dumps(st["Service"]["Resource"])
    assert st["Logs"]["Resource"] == {"Fn::GetAtt": [_logical_id(prod, "AWS::Logs::LogGroup",
                                                                 "/ecs/brainstorm-router-production"), "Arn"]}
    assert st["GuardAlarms"]["Resource"] != "*" and len(st["GuardAlarms"]["Resource"]) == 3
    wildcard = [sid for sid, s in st.items() if s["Resource"] == "*"]
    assert wildcard == ["WhoAmI"], "only sts:GetCallerIdentity, which has no resource"


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
