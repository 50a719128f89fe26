"""Metric filters, alarms and the dashboard an operator watches during (and after) a cutover."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_logs as logs
from constructs import Construct

from envconfig import AccessLog, Observability

MESH_WRITE_ROUTE_GLOB = "/v1/agent/*"


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
        target_group: elbv2.ApplicationTargetGroup,
        service: ecs.FargateService,
    ) -> None:
        super().__init__(scope, id)
        namespace = f"BrainstormRouter/{environment}"

        # Bypass events: what the cutover gate counts over 24 h, here as a running metric.
        bypass = logs.MetricFilter(
            self, "MtlsAdvisoryBypass", log_group=log_group,
            metric_namespace=namespace, metric_name="MtlsAdvisoryBypass", metric_value="1",
            filter_pattern=logs.FilterPattern.any_term("mtls-advisory"), default_value=0,
        )
        # 403s on mesh-write routes: after a strict cutover, the signal of a caller left behind.
        mesh_403 = logs.MetricFilter(
            self, "MeshWrite403", log_group=log_group,
            metric_namespace=namespace, metric_name="MeshWrite403", metric_value="1",
            filter_pattern=logs.FilterPattern.all(
                logs.FilterPattern.number_value(f"$.{access_log.status_field}", "=", 403),
                logs.FilterPattern.string_value(f"$.{access_log.route_field}", "=", MESH_WRITE_ROUTE_GLOB),
            ),
            default_value=0,
        )
        self.bypass_metric = bypass.metric(statistic="Sum", period=Duration.minutes(5))
        self.mesh_403_metric = mesh_403.metric(statistic="Sum", period=Duration.minutes(1))

        one_min = Duration.minutes(1)
        five_xx = alb.metrics.http_code_target(elbv2.HttpCodeTarget.TARGET_5XX_COUNT, period=one_min,
                                               statistic="Sum")
        unhealthy = target_group.metrics.unhealthy_host_count(period=one_min, statistic="Maximum")
        p95 = target_group.metrics.target_response_time(period=one_min, statistic="p95")

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
            alarm("P95Latency", o.alarm_p95, p95.with_(), o.p95_latency_ms / 1000,
                  f"p95 target response time >= {o.p95_latency_ms} ms"),
        ]
        self.mesh_403_alarm = alarm("MeshWrite403s", f"{o.alarm_prefix}-mesh-write-403",
                                    self.mesh_403_metric, 1,
                                    "403 on /v1/agent/*: after a strict cutover, a caller without a client cert")

        self.dashboard = cw.Dashboard(self, "Dashboard", dashboard_name=f"{o.alarm_prefix}-gateway")
        self.dashboard.add_widgets(
            cw.AlarmStatusWidget(title="Alarms", alarms=[*self.alarms, self.mesh_403_alarm], width=24),
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
                target_group.metrics.healthy_host_count(period=one_min, statistic="Minimum"), unhealthy]),
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(title="mTLS advisory bypass events", width=12, left=[self.bypass_metric]),
            cw.GraphWidget(title="403 on /v1/agent/*", width=12, left=[self.mesh_403_metric]),
        )
