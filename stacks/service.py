"""Network, cluster, ALB (HTTPS, mTLS passthrough) and the Fargate service with its scaling.

Two deployment shapes, from `service.deployment.strategy` (docs/infrastructure.md):

- rolling: one target group; min 100 % / max 200 %.
- canary / blue_green: ECS-native traffic shifting (deployment controller ECS). Two target groups
  behind a production listener rule and a test listener rule, both forwarding with weights that ECS
  rewrites during a deployment through the infrastructure role. The old (blue) tasks keep running
  for `bake` after production traffic moved, so a rollback is a weight change, not a redeploy.

Both roll back on the circuit breaker and on the deployment alarms (legitimate mesh-write 403s,
target 5xx, unhealthy hosts).
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from envconfig import (
    MAX_HEALTHY_PERCENT,
    MIN_HEALTHY_PERCENT,
    PRODUCTION_LISTENER_PORT,
    Database,
    Network,
    Scaling,
    Service,
)
from stacks.nag import acknowledge

CONTAINER_NAME = "gateway"
# Every request path starts with "/": the rules ECS shifts catch all traffic on their listener, so
# the listeners' default actions (forward to the first target group) are never what serves a request.
CATCH_ALL = "/*"
INFRASTRUCTURE_POLICY = "AmazonECSInfrastructureRolePolicyForLoadBalancers"

_STRATEGY = {"canary": ecs.DeploymentStrategy.CANARY, "blue_green": ecs.DeploymentStrategy.BLUE_GREEN}


class GatewayService(Construct):
    """Everything a request touches: VPC -> ALB :443 -> target group(s) -> Fargate tasks."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        environment: str,
        network: Network,
        service: Service,
        scaling: Scaling,
        database: Database,
        gateway_parameter: ssm.IStringParameter,
        log_group: logs.ILogGroup,
        deployment_alarm_names: tuple[str, ...],
    ) -> None:
        super().__init__(scope, id)
        deployment = service.deployment

        flow_logs = logs.LogGroup(self, "FlowLogs", retention=logs.RetentionDays.ONE_MONTH,
                                  removal_policy=RemovalPolicy.RETAIN)
        self.vpc = ec2.Vpc(
            self, "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(network.vpc_cidr),
            availability_zones=list(network.availability_zones),  # from config: no lookup at synth
            nat_gateways=network.nat_gateways,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24),
                ec2.SubnetConfiguration(name="app", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS,
                                        cidr_mask=20),
            ],
            flow_logs={"all": ec2.FlowLogOptions(
                destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs))},
        )

        self.cluster = ecs.Cluster(
            self, "Cluster", vpc=self.vpc, cluster_name=service.cluster_name,
            container_insights_v2=ecs.ContainerInsights.ENABLED,
        )

        task = ecs.FargateTaskDefinition(self, "Task", cpu=service.cpu,
                                         memory_limit_mib=service.memory_mib)
        self.container = task.add_container(
            CONTAINER_NAME,
            image=ecs.ContainerImage.from_registry(service.image),
            port_mappings=[ecs.PortMapping(container_port=service.container_port)],
            environment={"DATABASE_POOL_SIZE": str(database.pool_size),
                         "GATEWAY_ENV": environment},
            # The whole gateway config document, resolved by ECS when the task starts.
            secrets={"GATEWAY_CONFIG": ecs.Secret.from_ssm_parameter(gateway_parameter)},
            logging=ecs.LogDrivers.aws_logs(stream_prefix="gateway", log_group=log_group),
            # SIGTERM -> SIGKILL: the longest request plus a margin (issue 11 §3; at most Fargate's 120 s).
            stop_timeout=Duration.seconds(service.stop_timeout_seconds),
        )
        acknowledge(task,
            id="AwsSolutions-ECS2",
            reason="DATABASE_POOL_SIZE and GATEWAY_ENV are sizing/identity values, not secrets; "
                   "the gateway config arrives through `secrets` from SSM.",
        )

        access_logs = s3.Bucket(
            self, "AlbAccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            removal_policy=RemovalPolicy.RETAIN,
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(400))],
        )
        acknowledge(access_logs,
            id="AwsSolutions-S1",
            reason="This bucket only receives ALB access logs; logging access to the log bucket "
                   "itself would need another bucket with the same question, without end.",
        )

        self.alb = elbv2.ApplicationLoadBalancer(
            self, "Alb", vpc=self.vpc, internet_facing=True,
            drop_invalid_header_fields=True,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC),
            # A non-streamed answer at the request timeout sends nothing until it is done: the ALB's
            # idle timeout (default 60 s) must not cut it first.
            idle_timeout=Duration.seconds(service.idle_timeout_seconds),
        )
        self.alb.log_access_logs(access_logs, prefix="alb")
        acknowledge(self.alb,
            id="AwsSolutions-EC23",
            reason="The gateway is a public API: its ALB must accept HTTPS from any address "
                   "(authentication is API keys plus mTLS at the gateway). The test listener is no "
                   "more open than production: same certificate, same mTLS passthrough, same auth.",
        )

        self.certificate = acm.Certificate.from_certificate_arn(self, "Cert", service.certificate_arn)
        self.listener = self._https_listener("Https", PRODUCTION_LISTENER_PORT)

        self.service = ecs.FargateService(
            self, "Service",
            cluster=self.cluster,
            task_definition=task,
            service_name=service.service_name,
            desired_count=service.desired_count,
            # A forced redeploy starts the new tasks before stopping the old ones: never below
            # the desired count while the flag changes. (Blue/green and canary always run a full
            # green set beside blue: the same 200 % peak the database check assumes.)
            min_healthy_percent=MIN_HEALTHY_PERCENT,
            max_healthy_percent=MAX_HEALTHY_PERCENT,
            # Tasks that cannot start fail the deployment in minutes, not hours. ECS documents both
            # failure detectors (circuit breaker, alarms) for rolling and blue/green deployments
            # ("Amazon ECS deployment failure detection"); SERVICE_DEPLOYMENT_FAILED, which wakes the
            # restorer, is sent for services with the circuit breaker on.
            circuit_breaker=ecs.DeploymentCircuitBreaker(enable=True, rollback=True),
            deployment_strategy=_STRATEGY.get(deployment.strategy),
            canary_configuration=(ecs.TrafficShiftConfig(
                step_percent=deployment.canary_percent,
                step_bake_time=Duration.minutes(deployment.canary_bake_minutes or 0))
                if deployment.strategy == "canary" else None),
            bake_time=(Duration.minutes(deployment.bake_minutes or 0) if deployment.traffic_shifting else None),
            # The names are config-derived strings (the alarms are created by GatewayObservability;
            # GatewayStack makes the service depend on them).
            deployment_alarms=ecs.DeploymentAlarmConfig(alarm_names=list(deployment_alarm_names),
                                                        behavior=ecs.AlarmBehavior.ROLLBACK_ON_ALARM),
            health_check_grace_period=Duration.seconds(service.health_check_grace_seconds),
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
            assign_public_ip=False,
        )

        health_check = elbv2.HealthCheck(path=service.health_check_path, healthy_threshold_count=2,
                                         unhealthy_threshold_count=3, interval=Duration.seconds(15))
        # Draining: in-flight requests finish before ECS sends SIGTERM (>= the request timeout).
        drain = Duration.seconds(service.deregistration_delay_seconds)
        target = dict(container_name=CONTAINER_NAME, container_port=service.container_port)

        self.test_listener: elbv2.ApplicationListener | None = None
        self.alternate_target_group: elbv2.ApplicationTargetGroup | None = None
        self.production_rule: elbv2.ApplicationListenerRule | None = None
        self.test_rule: elbv2.ApplicationListenerRule | None = None
        self.infrastructure_role: iam.Role | None = None
        if not deployment.traffic_shifting:
            self.target_group = self.listener.add_targets(
                "Gateway", port=service.container_port, protocol=elbv2.ApplicationProtocol.HTTP,
                targets=[self.service.load_balancer_target(**target)],
                health_check=health_check, deregistration_delay=drain,
            )
        else:
            # Blue: the listener's default target group (same construct as the rolling shape).
            self.target_group = self.listener.add_targets(
                "Gateway", port=service.container_port, protocol=elbv2.ApplicationProtocol.HTTP,
                health_check=health_check, deregistration_delay=drain,
            )
            # Green: where ECS registers the new revision's tasks during a deployment.
            self.alternate_target_group = elbv2.ApplicationTargetGroup(
                self, "GatewayAlternate", vpc=self.vpc, port=service.container_port,
                protocol=elbv2.ApplicationProtocol.HTTP, target_type=elbv2.TargetType.IP,
                health_check=health_check, deregistration_delay=drain,
            )
            assert deployment.test_listener_port is not None
            # Its default action (never reached, see CATCH_ALL) is a forward too: ECS blue/green
            # refuses listeners that mix forward with non-forward actions.
            self.test_listener = self._https_listener(
                "Test", deployment.test_listener_port,
                default_action=elbv2.ListenerAction.forward([self.target_group]))
            self.production_rule = self._shifted_rule("ProductionRule", self.listener)
            self.test_rule = self._shifted_rule("TestRule", self.test_listener)
            # The role ECS assumes to rewrite the rules' weights and (de)register targets.
            self.infrastructure_role = iam.Role(
                self, "EcsInfrastructureRole",
                assumed_by=iam.ServicePrincipal("ecs.amazonaws.com"),
                description="ECS shifts traffic between the gateway's blue and green target groups",
                managed_policies=[iam.ManagedPolicy.from_aws_managed_policy_name(INFRASTRUCTURE_POLICY)],
            )
            acknowledge(self.infrastructure_role,
                id=f"AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/{INFRASTRUCTURE_POLICY}]",
                reason="The ECS-maintained policy for exactly this role (ECS docs, 'Amazon ECS infrastructure "
                       "IAM role for load balancers'). It tracks the ELB calls ECS makes as the feature "
                       "changes; a hand-written subset could lack one and fail a traffic shift or a "
                       "rollback half way, which cannot be tested without an AWS account.",
            )
            self.target_group.add_target(self.service.load_balancer_target(
                **target,
                alternate_target=ecs.AlternateTarget(
                    "AlternateTarget",
                    alternate_target_group=self.alternate_target_group,
                    production_listener=ecs.ListenerRuleConfiguration.application_listener_rule(
                        self.production_rule),
                    test_listener=ecs.ListenerRuleConfiguration.application_listener_rule(self.test_rule),
                    role=self.infrastructure_role,
                ),
            ))
            # ECS validates the rules and the role when it creates the service.
            self.service.node.add_dependency(self.production_rule, self.test_rule, self.infrastructure_role)

        # Scaling: CPU and memory (the ship log's action item), plus requests per target, since
        # the R20 ceiling was pool exhaustion and timeouts, which CPU does not show. The request
        # target is derived from the measured per-task ceiling (scaling.capacity) less its headroom.
        requests_target = scaling.requests_per_target_per_minute
        count = self.service.auto_scale_task_count(min_capacity=scaling.min_tasks,
                                                   max_capacity=scaling.max_tasks)
        out_ = Duration.seconds(scaling.scale_out_cooldown_seconds)
        in_ = Duration.seconds(scaling.scale_in_cooldown_seconds)
        count.scale_on_cpu_utilization("Cpu", target_utilization_percent=scaling.cpu_target_percent,
                                       scale_out_cooldown=out_, scale_in_cooldown=in_)
        count.scale_on_memory_utilization("Memory", target_utilization_percent=scaling.memory_target_percent,
                                          scale_out_cooldown=out_, scale_in_cooldown=in_)
        if self.alternate_target_group is None:
            count.scale_on_request_count("Requests", requests_per_target=requests_target,
                                         target_group=self.target_group,
                                         scale_out_cooldown=out_, scale_in_cooldown=in_)
        else:
            self._scale_on_requests_of_both(count, requests_target, out_, in_)

    @property
    def target_groups(self) -> list[elbv2.ApplicationTargetGroup]:
        """Blue first; green too when traffic shifts between them."""
        return [tg for tg in (self.target_group, self.alternate_target_group) if tg is not None]

    def _https_listener(self, id: str, port: int,
                        default_action: elbv2.ListenerAction | None = None) -> elbv2.ApplicationListener:
        return self.alb.add_listener(
            id, port=port, protocol=elbv2.ApplicationProtocol.HTTPS,
            certificates=[self.certificate],
            ssl_policy=elbv2.SslPolicy.RECOMMENDED_TLS,
            # Passthrough: the ALB forwards the client chain in X-Amzn-Mtls-Clientcert and the
            # gateway decides. In verify mode a missing cert fails the TLS handshake, so no
            # caller (and no probe) would ever see the 403 the runbook checks for.
            mutual_authentication=elbv2.MutualAuthentication(
                mutual_authentication_mode=elbv2.MutualAuthenticationMode.PASS_THROUGH),
            open=True,
            default_action=default_action,
        )

    def _shifted_rule(self, id: str, listener: elbv2.ApplicationListener) -> elbv2.ApplicationListenerRule:
        """A catch-all rule forwarding to blue (100) and green (0): the weights ECS rewrites.

        After a deployment ECS leaves green at 100; CloudFormation does not notice, and a stack
        update that *changes this rule* would put back blue 100 (docs/infrastructure.md)."""
        assert self.alternate_target_group is not None
        return elbv2.ApplicationListenerRule(
            self, id, listener=listener, priority=1,
            conditions=[elbv2.ListenerCondition.path_patterns([CATCH_ALL])],
            action=elbv2.ListenerAction.weighted_forward([
                elbv2.WeightedTargetGroup(target_group=self.target_group, weight=100),
                elbv2.WeightedTargetGroup(target_group=self.alternate_target_group, weight=0),
            ]),
        )

    def _scale_on_requests_of_both(self, count: ecs.ScalableTaskCount, requests_target: int,
                                   out_: Duration, in_: Duration) -> None:
        """Requests per target summed over blue and green.

        After each blue/green or canary deployment the *other* target group takes production traffic,
        so the predefined ALBRequestCountPerTarget (one target group) would watch an idle group half
        the time. The idle group's RequestCountPerTarget is 0, so blue + green is the live group's
        value (the pattern of AWS's sample 'ecs-bluegreen-autoscaling'). Test-listener probes add a
        little to green during a deployment: a bias towards scaling out, never in.
        """
        alb_name = self.alb.load_balancer_full_name

        def per_target(tg: elbv2.ApplicationTargetGroup, id: str) -> dict:
            return {"Id": id, "ReturnData": False, "MetricStat": {"Stat": "Sum", "Metric": {
                "Namespace": "AWS/ApplicationELB", "MetricName": "RequestCountPerTarget",
                "Dimensions": [{"Name": "TargetGroup", "Value": tg.target_group_full_name},
                               {"Name": "LoadBalancer", "Value": alb_name}]}}}

        assert self.alternate_target_group is not None
        count.scale_to_track_custom_metric(
            "Requests", target_value=requests_target,
            metric=self.target_group.metrics.request_count_per_target(statistic="Sum"),
            scale_out_cooldown=out_, scale_in_cooldown=in_,
        )
        cfn = count.node.find_child("Target").node.find_child("Requests").node.find_child("Resource")
        spec = "TargetTrackingScalingPolicyConfiguration.CustomizedMetricSpecification"
        for key in ("MetricName", "Namespace", "Dimensions", "Statistic", "Unit"):
            cfn.add_property_deletion_override(f"{spec}.{key}")
        cfn.add_property_override(f"{spec}.Metrics", [
            per_target(self.target_group, "blue"),
            per_target(self.alternate_target_group, "green"),
            {"Id": "requests", "Expression": "blue + green", "Label": "requests per target (live group)",
             "ReturnData": True},
        ])
