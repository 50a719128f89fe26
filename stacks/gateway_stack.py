"""One stack per environment, assembled from the constructs and config/<env>.yaml."""

from __future__ import annotations

from aws_cdk import CfnOutput, Environment, RemovalPolicy, Stack, Tags
from aws_cdk import aws_logs as logs
from constructs import Construct

from envconfig import LOG_RETENTION_DAYS, EnvConfig
from stacks.gateway_config import GatewayConfig
from stacks.observability import GatewayObservability
from stacks.operator_policy import CutoverOperatorPolicy
from stacks.restorer import Restorer
from stacks.service import GatewayService

# CloudWatch's allowed retention values, in the order aws_cdk.aws_logs.RetentionDays lists them
# (its Python enum values are names, not days). config.py validates the days against this list.
_RETENTION = dict(zip(LOG_RETENTION_DAYS, [d for d in logs.RetentionDays if d.name != "INFINITE"],
                      strict=True))


def retention(days: int) -> logs.RetentionDays:
    return _RETENTION[days]


class GatewayStack(Stack):
    def __init__(self, scope: Construct, *, config: EnvConfig) -> None:
        super().__init__(
            scope, config.stack_name,
            env=Environment(account=config.account, region=config.region),
            description=f"brainstorm-router gateway ({config.environment}): Fargate + ALB (mTLS "
                        "passthrough), scaling, gateway config parameter, alarms, restorer, operator policy",
        )
        Tags.of(self).add("project", "brainstorm-router")
        Tags.of(self).add("environment", config.environment)

        self.log_group = logs.LogGroup(
            self, "GatewayLogs", log_group_name=config.observability.log_group_name,
            retention=retention(config.observability.log_retention_days),
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.gateway_config = GatewayConfig(self, "GatewayConfig",
                                            parameter_name=config.gateway.parameter_name,
                                            document=config.gateway.document)
        self.gateway = GatewayService(
            self, "Gateway",
            environment=config.environment, network=config.network, service=config.service,
            scaling=config.scaling, database=config.database,
            gateway_parameter=self.gateway_config.parameter, log_group=self.log_group,
            deployment_alarm_names=config.observability.deployment_alarms,
        )
        self.observability = GatewayObservability(
            self, "Observability",
            environment=config.environment, observability=config.observability,
            access_log=config.access_log, log_group=self.log_group,
            alb=self.gateway.alb, target_groups=self.gateway.target_groups,
            service=self.gateway.service, source=config.source or f"config/{config.environment}.yaml",
        )
        # The service names its deployment alarms by (config-derived) name: they must exist first.
        self.gateway.service.node.add_dependency(*self.observability.deployment_alarms)
        self.restorer = Restorer(
            self, "Restorer",
            environment=config.environment,
            gateway_parameter_name=config.gateway.parameter_name,
            journal_parameter_name=config.journal_parameter, lock_parameter_name=config.lock_parameter,
            service=self.gateway.service,
            cluster_name=config.service.cluster_name, service_name=config.service.service_name,
        )
        self.operator_policy = CutoverOperatorPolicy(
            self, "CutoverOperator",
            environment=config.environment, ssm_prefix=config.ssm_prefix,
            gateway_parameter_name=config.gateway.parameter_name,
            service=self.gateway.service, cluster=self.gateway.cluster,
            cluster_name=config.service.cluster_name, service_name=config.service.service_name,
            log_group=self.log_group,
            # Guard alarms (the gate) and the legitimate-403 deployment alarm (watch and status).
            alarm_arns=[a.alarm_arn for a in (*self.observability.alarms, self.observability.legitimate_403_alarm)],
        )

        CfnOutput(self, "AlbDnsName", value=self.gateway.alb.load_balancer_dns_name)
        CfnOutput(self, "GatewayConfigParameter", value=config.gateway.parameter_name)
        CfnOutput(self, "OperatorPolicyArn", value=self.operator_policy.policy.managed_policy_arn)
        CfnOutput(self, "RestorerFunctionName", value=self.restorer.function.function_name)
        CfnOutput(self, "RestorerDeadLetterQueueUrl", value=self.restorer.dead_letters.queue_url)
        if config.service.deployment.traffic_shifting:
            # The cutover's probes reach only the new revision here: https://<host>:<port>/...
            CfnOutput(self, "TestListenerPort", value=str(config.service.deployment.test_listener_port))
