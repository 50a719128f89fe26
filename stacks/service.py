"""Network, cluster, ALB (HTTPS, mTLS passthrough) and the Fargate service with its scaling."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from envconfig import MAX_HEALTHY_PERCENT, MIN_HEALTHY_PERCENT, Database, Network, Scaling, Service
from stacks.nag import acknowledge

CONTAINER_NAME = "gateway"


class GatewayService(Construct):
    """Everything a request touches: VPC -> ALB :443 -> target group -> Fargate tasks."""

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
    ) -> None:
        super().__init__(scope, id)

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
        )
        self.alb.log_access_logs(access_logs, prefix="alb")
        acknowledge(self.alb,
            id="AwsSolutions-EC23",
            reason="The gateway is a public API: its ALB must accept HTTPS from any address "
                   "(authentication is API keys plus mTLS at the gateway).",
        )

        self.listener = self.alb.add_listener(
            "Https", port=443, protocol=elbv2.ApplicationProtocol.HTTPS,
            certificates=[acm.Certificate.from_certificate_arn(self, "Cert", service.certificate_arn)],
            ssl_policy=elbv2.SslPolicy.RECOMMENDED_TLS,
            # Passthrough: the ALB forwards the client chain in X-Amzn-Mtls-Clientcert and the
            # gateway decides. In verify mode a missing cert fails the TLS handshake, so no
            # caller (and no probe) would ever see the 403 the runbook checks for.
            mutual_authentication=elbv2.MutualAuthentication(
                mutual_authentication_mode=elbv2.MutualAuthenticationMode.PASS_THROUGH),
            open=True,
        )

        self.service = ecs.FargateService(
            self, "Service",
            cluster=self.cluster,
            task_definition=task,
            service_name=service.service_name,
            desired_count=service.desired_count,
            # A forced redeploy starts the new tasks before stopping the old ones: never below
            # the desired count while the flag changes.
            min_healthy_percent=MIN_HEALTHY_PERCENT,
            max_healthy_percent=MAX_HEALTHY_PERCENT,
            circuit_breaker=ecs.DeploymentCircuitBreaker(enable=True, rollback=True),
            health_check_grace_period=Duration.seconds(service.health_check_grace_seconds),
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
            assign_public_ip=False,
        )
        self.target_group = self.listener.add_targets(
            "Gateway",
            port=service.container_port,
            protocol=elbv2.ApplicationProtocol.HTTP,
            targets=[self.service.load_balancer_target(container_name=CONTAINER_NAME,
                                                       container_port=service.container_port)],
            health_check=elbv2.HealthCheck(path=service.health_check_path,
                                           healthy_threshold_count=2, unhealthy_threshold_count=3,
                                           interval=Duration.seconds(15)),
            deregistration_delay=Duration.seconds(30),
        )

        # Scaling: CPU and memory (the ship log's action item), plus requests per target, since
        # the R20 ceiling was pool exhaustion and timeouts, which CPU does not show.
        count = self.service.auto_scale_task_count(min_capacity=scaling.min_tasks,
                                                   max_capacity=scaling.max_tasks)
        out_ = Duration.seconds(scaling.scale_out_cooldown_seconds)
        in_ = Duration.seconds(scaling.scale_in_cooldown_seconds)
        count.scale_on_cpu_utilization("Cpu", target_utilization_percent=scaling.cpu_target_percent,
                                       scale_out_cooldown=out_, scale_in_cooldown=in_)
        count.scale_on_memory_utilization("Memory", target_utilization_percent=scaling.memory_target_percent,
                                          scale_out_cooldown=out_, scale_in_cooldown=in_)
        count.scale_on_request_count("Requests", requests_per_target=scaling.requests_per_target_per_minute,
                                     target_group=self.target_group,
                                     scale_out_cooldown=out_, scale_in_cooldown=in_)
