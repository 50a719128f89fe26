"""The IAM managed policy an operator (or CI role) attaches to run `python -m cutover`.

Exactly what the tool calls (tests/test_stack.py checks the policy against cutover/aws.py),
scoped to this environment's resources wherever IAM allows.
"""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.nag import acknowledge


class CutoverOperatorPolicy(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        environment: str,
        ssm_prefix: str,
        gateway_parameter_name: str,
        service: ecs.FargateService,
        cluster: ecs.ICluster,
        cluster_name: str,
        service_name: str,
        log_group: logs.ILogGroup,
        alarm_arns: list[str],
    ) -> None:
        super().__init__(scope, id)
        stack = Stack.of(self)

        def param_arn(name: str) -> str:
            return stack.format_arn(service="ssm", resource="parameter", resource_name=name.lstrip("/"))

        gateway_param = param_arn(gateway_parameter_name)
        cutover_params = param_arn(f"{ssm_prefix}/cutover/*")
        # arn:aws:ecs:<region>:<account>:service-deployment/<cluster>/<service>/<id> (ECS docs,
        # "Permissions required for viewing Amazon ECS service deployments").
        deployment_ids = f"{cluster_name}/{service_name}/*"
        service_deployments = stack.format_arn(service="ecs", resource="service-deployment",
                                               resource_name=deployment_ids)
        self.policy = iam.ManagedPolicy(
            self, "Policy",
            managed_policy_name=f"brainstorm-router-{environment}-cutover-operator",
            description="Run `python -m cutover` against this environment (flip, redeploy, probe, watch, roll back).",
            statements=[
                iam.PolicyStatement(
                    sid="GatewayConfig",
                    # Unlabel: at SSM's 100-version limit a labelled oldest version blocks every write.
                    actions=["ssm:GetParameter", "ssm:GetParameterHistory", "ssm:PutParameter",
                             "ssm:LabelParameterVersion", "ssm:UnlabelParameterVersion"],
                    resources=[gateway_param]),
                iam.PolicyStatement(
                    sid="CutoverLockAndJournal",
                    actions=["ssm:GetParameter", "ssm:GetParameterHistory", "ssm:PutParameter",
                             "ssm:DeleteParameter"],
                    resources=[cutover_params]),
                iam.PolicyStatement(
                    sid="Service",
                    actions=["ecs:DescribeServices", "ecs:UpdateService", "ecs:ListServiceDeployments"],
                    resources=[service.service_arn]),
                iam.PolicyStatement(
                    sid="ServiceDeployments",
                    # StopServiceDeployment(ROLLBACK): the canary rollback that shifts traffic back.
                    actions=["ecs:DescribeServiceDeployments", "ecs:StopServiceDeployment"],
                    resources=[service_deployments]),
                iam.PolicyStatement(
                    sid="Tasks",
                    # ListTasks authorizes on container instances, which Fargate tasks do not have;
                    # the ecs:cluster condition keeps it to this cluster.
                    actions=["ecs:ListTasks"],
                    resources=["*"],
                    conditions={"ArnEquals": {"ecs:cluster": cluster.cluster_arn}}),
                iam.PolicyStatement(
                    sid="TaskDetails",
                    # The per-task proof: which deployment started each running task.
                    actions=["ecs:DescribeTasks"],
                    resources=[stack.format_arn(service="ecs", resource="task",
                                                resource_name=f"{service.cluster.cluster_name}/*")]),
                iam.PolicyStatement(
                    sid="Logs",
                    actions=["logs:FilterLogEvents"],
                    # The log group's Arn attribute already ends in ":*" (its streams).
                    resources=[log_group.log_group_arn]),
                iam.PolicyStatement(
                    sid="GuardAlarms",
                    actions=["cloudwatch:DescribeAlarms"],
                    resources=alarm_arns),
                iam.PolicyStatement(
                    sid="WhoAmI",
                    actions=["sts:GetCallerIdentity"],
                    resources=["*"]),
            ],
        )
        acknowledge(self.policy,
            id=f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:ssm:{stack.region}:<AWS::AccountId>:"
               f"parameter{ssm_prefix}/cutover/*]",
            reason="The cutover lock and journal are created and deleted per run under this one prefix.",
        )
        acknowledge(self.policy,
            id=f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:ecs:{stack.region}:<AWS::AccountId>:task/"
               f"<{stack.get_logical_id(service.cluster.node.default_child)}>/*]",
            reason="Task ids are generated by ECS at each deployment; the wildcard is scoped to this cluster.",
        )
        acknowledge(self.policy,
            id=f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:ecs:{stack.region}:<AWS::AccountId>:"
               f"service-deployment/{deployment_ids}]",
            reason="ECS creates a service deployment (and its ARN) per deployment; the ARN is scoped to "
                   "this cluster and service, only the deployment id is open.",
        )
        acknowledge(self.policy,
            id="AwsSolutions-IAM5[Resource::*]",
            reason="sts:GetCallerIdentity has no resource to scope to (it only says who the operator is); "
                   "ecs:ListTasks is limited to this cluster by the ecs:cluster condition (its resource "
                   "type is the container instance, which Fargate tasks do not have).",
        )
