"""Metric filters, alarms and the dashboard an operator watches during (and after) a cutover."""

from __future__ import annotations

import re

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_logs as logs
from constructs import Construct

from envconfig import AccessLog, ConfigError, Observability

# The tool's classifier (cutover/mtls.py: MESH_WRITE_PREFIX, PROBE_USER_AGENT) in CloudWatch's
# language. The stacks do not import the tool; tests/test_legitimate_403_filter.py checks that these
# equal the tool's constants and that the pattern classifies a table of lines as classify_403 does.
MESH_WRITE_PREFIX = "/v1/agent/"
PROBE_USER_AGENT = "brainstorm-cutover-probe"
MESH_WRITE_ROUTE_GLOB = f"{MESH_WRITE_PREFIX}*"
_SELECTOR_NAME = re.compile(r"[A-Za-z0-9_-]+")  # what a CloudWatch JSON property selector accepts


def legitimate_mesh_write_403(fields: AccessLog, *, source: str = "config") -> logs.JsonPattern:
    """403 on /v1/agent/*, an authenticated caller, and not the cutover tool's own traffic.

    CloudWatch JSON patterns have no NOT, so "not marked" is spelled out per shape a field can take:
    absent (NOT EXISTS), JSON null (IS NULL), empty string; and "a caller" as a non-empty string or
    number. The status is compared as a number and as a string because the tool accepts both.
    """
    for key in ("route_field", "status_field", "caller_field", "user_agent_field", "run_id_field"):
        name = getattr(fields, key)
        if not _SELECTOR_NAME.fullmatch(name):
            raise ConfigError(source, f"access_log.{key}", f"{name!r} cannot be used in a CloudWatch JSON "
                              "filter pattern", "use letters, digits, '-' and '_' only")
    f = logs.FilterPattern
    status, route = f"$.{fields.status_field}", f"$.{fields.route_field}"
    caller, agent, run_id = f"$.{fields.caller_field}", f"$.{fields.user_agent_field}", f"$.{fields.run_id_field}"
    return f.all(
        f.any(f.number_value(status, "=", 403), f.string_value(status, "=", "403")),
        f.string_value(route, "=", MESH_WRITE_ROUTE_GLOB),
        f.exists(caller),
        f.string_value(caller, "!=", ""),
        # Not the tool's own request, which carries BOTH marks (cutover/mtls.py AccessEvent.marked):
        # one mark alone (a harness named like the probe, a client sending X-Cutover-Run) is a caller.
        f.any(f.not_exists(run_id), f.is_null(run_id), f.string_value(run_id, "=", ""),
              f.not_exists(agent), f.is_null(agent), f.string_value(agent, "!=", f"{PROBE_USER_AGENT}/*")),
    )


class GatewayObservability(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        environment: str,
        observability: Observability,
        access_log: AccessLog,
        log_group: logs.ILogGroup,
        alb: elbv2.ApplicationLoadBalancer,
        target_groups: list[elbv2.ApplicationTargetGroup],
        service: ecs.FargateService,
        source: str = "config",
    ) -> None:
        super().__init__(scope, id)
        namespace = f"BrainstormRouter/{environment}"

        # Bypass events: what the cutover gate counts over 24 h, here as a running metric.
        bypass = logs.MetricFilter(
            self, "MtlsAdvisoryBypass", log_group=log_group,
            metric_namespace=namespace, metric_name="MtlsAdvisoryBypass", metric_value="1",
            filter_pattern=logs.FilterPattern.any_term("mtls-advisory"), default_value=0,
        )
        # All 403s on mesh-write routes, the tool's own probes included: a graph for humans.
        mesh_403 = logs.MetricFilter(
            self, "MeshWrite403", log_group=log_group,
            metric_namespace=namespace, metric_name="MeshWrite403", metric_value="1",
            filter_pattern=logs.FilterPattern.all(
                logs.FilterPattern.number_value(f"$.{access_log.status_field}", "=", 403),
                logs.FilterPattern.string_value(f"$.{access_log.route_field}", "=", MESH_WRITE_ROUTE_GLOB),
            ),
            default_value=0,
        )
        # Legitimate ones only: an authenticated caller refused, i.e. a caller left behind by strict.
        # The signal of harm, and one of the deployment alarms ECS rolls back on.
        legitimate_403 = logs.MetricFilter(
            self, "LegitimateMeshWrite403", log_group=log_group,
            metric_namespace=namespace, metric_name="LegitimateMeshWrite403", metric_value="1",
            filter_pattern=legitimate_mesh_write_403(access_log, source=source), default_value=0,
        )
        self.bypass_metric = bypass.metric(statistic="Sum", period=Duration.minutes(5))
        self.mesh_403_metric = mesh_403.metric(statistic="Sum", period=Duration.minutes(1))
        self.legitimate_403_metric = legitimate_403.metric(statistic="Sum", period=Duration.minutes(1))

        one_min = Duration.minutes(1)
        five_xx = alb.metrics.http_code_target(elbv2.HttpCodeTarget.TARGET_5XX_COUNT, period=one_min,
                                               statistic="Sum")
        unhealthy = _worst(target_groups, "unhealthy hosts (worst target group)",
                           lambda tg: tg.metrics.unhealthy_host_count(period=one_min, statistic="Maximum"))
        p95 = _worst(target_groups, "p95 response time (worst target group)",
                     lambda tg: tg.metrics.target_response_time(period=one_min, statistic="p95"))

        # Missing data is NOT breaching everywhere: a quiet gateway (no requests, so no datapoints)
        # must not look broken, and must not block a cutover gate.
        def alarm(cid: str, name: str, metric: cw.IMetric, threshold: float, what: str) -> cw.Alarm:
            return cw.Alarm(
                self, cid, alarm_name=name, metric=metric, threshold=threshold,
                evaluation_periods=3, datapoints_to_alarm=2,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING, alarm_description=what,
            )

        o = observability
        self.alarms = [
            alarm("Alb5xx", o.alarm_5xx, five_xx, o.alb_5xx_per_minute,
                  f">= {o.alb_5xx_per_minute} target 5xx per minute (2 of 3 minutes)"),
            alarm("UnhealthyHosts", o.alarm_unhealthy, unhealthy, o.unhealthy_hosts,
                  f">= {o.unhealthy_hosts} unhealthy gateway task(s) behind the ALB"),
            alarm("P95Latency", o.alarm_p95, p95, o.p95_latency_ms / 1000,
                  f"p95 target response time >= {o.p95_latency_ms} ms"),
        ]
        # One legitimate 403 in a minute is one caller hurt: no 2-of-3 smoothing. (The all-403 alarm
        # this replaces also fired on the tool's own probes during every strict cutover.)
        self.legitimate_403_alarm = cw.Alarm(
            self, "LegitimateMeshWrite403s", alarm_name=o.alarm_legitimate_403,
            metric=self.legitimate_403_metric, threshold=1, evaluation_periods=1, datapoints_to_alarm=1,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            alarm_description="An authenticated caller got 403 on /v1/agent/* (not a cutover probe or "
                              "sentinel): strict mTLS refused a caller without a client certificate. "
                              "A deployment alarm: ECS rolls the deployment back.",
        )
        # (alarm_name is a token here: map the config-derived names to the constructs.)
        by_name = dict(zip((*o.guard_alarms, o.alarm_legitimate_403),
                           (*self.alarms, self.legitimate_403_alarm), strict=True))
        self.deployment_alarms = [by_name[name] for name in o.deployment_alarms]

        self.dashboard = cw.Dashboard(self, "Dashboard", dashboard_name=f"{o.alarm_prefix}-gateway")
        self.dashboard.add_widgets(
            cw.AlarmStatusWidget(title="Alarms", alarms=[*self.alarms, self.legitimate_403_alarm], width=24),
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(title="Requests and target 5xx", width=12, left=[
                alb.metrics.request_count(period=one_min, statistic="Sum"), five_xx]),
            cw.GraphWidget(title="Target response time p95 (s)", width=12, left=[p95]),
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(title="Tasks: CPU and memory %", width=12, left=[
                service.metric_cpu_utilization(period=one_min),
                service.metric_memory_utilization(period=one_min)]),
            cw.GraphWidget(title="Healthy / unhealthy hosts", width=12, left=[
                *[tg.metrics.healthy_host_count(period=one_min, statistic="Minimum") for tg in target_groups],
                unhealthy]),
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(title="mTLS advisory bypass events", width=12, left=[self.bypass_metric]),
            cw.GraphWidget(title="403 on /v1/agent/*: all, and legitimate callers", width=12,
                           left=[self.mesh_403_metric, self.legitimate_403_metric]),
        )


def _worst(target_groups: list[elbv2.ApplicationTargetGroup], label: str, metric) -> cw.IMetric:
    """The metric of the only target group, or the worst of blue and green: after each canary or
    blue/green deployment the other group serves production, so an alarm on one would go blind."""
    if len(target_groups) == 1:
        return metric(target_groups[0])
    names = ["blue", "green"][:len(target_groups)]
    return cw.MathExpression(expression=f"MAX([{', '.join(names)}])", label=label,
                             using_metrics=dict(zip(names, map(metric, target_groups), strict=True)),
                             period=Duration.minutes(1))
