"""One stack per environment, assembled from the constructs and config/<env>.yaml."""

from __future__ import annotations

from aws_cdk import CfnOutput, Environment, RemovalPolicy, Stack, Tags
from aws_cdk import aws_logs as logs
from constructs import Construct

from envconfig import LOG_RETENTION_DAYS, EnvConfig
from stacks.gateway_config import GatewayConfig
from stacks.observability import GatewayObservability
from stacks.operator_policy import CutoverOperatorPolicy
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
                        "passthrough), scaling, gateway config parameter, alarms, operator policy",
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
        )
        self.observability = GatewayObservability(
            self, "Observability",
            environment=config.environment, observability=config.observability,
            access_log=config.access_log, log_group=self.log_group,
            alb=self.gateway.alb, target_group=self.gateway.target_group,
            service=self.gateway.service,
        )
        self.operator_policy = CutoverOperatorPolicy(
            self, "CutoverOperator",
            environment=config.environment, ssm_prefix=config.ssm_prefix,
            gateway_parameter_name=config.gateway.parameter_name,
            service=self.gateway.service, log_group=self.log_group,
            alarm_arns=[a.alarm_arn for a in self.observability.alarms],
        )

        CfnOutput(self, "AlbDnsName", value=self.gateway.alb.load_balancer_dns_name)
        CfnOutput(self, "GatewayConfigParameter", value=config.gateway.parameter_name)
        CfnOutput(self, "OperatorPolicyArn", value=self.operator_policy.policy.managed_policy_arn)
