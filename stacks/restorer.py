"""The restorer: EventBridge (this service's failed or rolling-back deployments) -> a Python Lambda
that puts the previous mTLS mode back when a cutover run is unfinished (restorer/handler.py).

Packaged without Docker: restorer/ and cutover_core/ (standard library only, tests/test_core.py)
are copied as plain files into a staging directory at synth and shipped with Code.from_asset; the
Lambda runtime brings boto3.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from envconfig import PROJECT_ROOT

PACKAGES = ("restorer", "cutover_core")
HANDLER = "restorer.handler.handler"
RUNTIME = lambda_.Runtime.PYTHON_3_14
DETAIL_TYPE = "ECS Deployment State Change"
# The documented eventName values (ECS developer guide, "service deployment state change events"):
# FAILED is sent when the circuit breaker or a deployment alarm fails a deployment; a rollback starts
# as an IN_PROGRESS whose reason says "rolling back" (e.g. "ECS deployment circuit breaker: rolling
# back to deploymentId ecs-svc/..."). COMPLETED and forward IN_PROGRESS events do not match.
EVENT_DETAIL = {"$or": [
    {"eventName": ["SERVICE_DEPLOYMENT_FAILED"]},
    {"eventName": ["SERVICE_DEPLOYMENT_IN_PROGRESS"], "reason": [{"wildcard": "*rolling back*"}]},
]}


@functools.cache
def stage_code() -> str:
    """restorer/ + cutover_core/ as plain files in a fresh directory (once per process)."""
    out = Path(tempfile.mkdtemp(prefix="brainstorm-restorer-"))
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    for package in PACKAGES:
        shutil.copytree(PROJECT_ROOT / package, out / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo"))
    return str(out)


class Restorer(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        environment: str,
        gateway_parameter_name: str,
        journal_parameter_name: str,
        lock_parameter_name: str,
        service: ecs.FargateService,
        cluster_name: str,
        service_name: str,
    ) -> None:
        super().__init__(scope, id)
        stack = Stack.of(self)

        def param_arn(name: str) -> str:
            return stack.format_arn(service="ssm", resource="parameter", resource_name=name.lstrip("/"))

        self.dead_letters = sqs.Queue(
            self, "DeadLetters",
            encryption=sqs.QueueEncryption.SQS_MANAGED,  # SSE-SQS: EventBridge can send to it without KMS grants
            enforce_ssl=True,
            retention_period=Duration.days(14),
        )
        self.log_group = logs.LogGroup(self, "Logs", retention=logs.RetentionDays.ONE_YEAR,
                                       removal_policy=RemovalPolicy.RETAIN)
        self.role = iam.Role(
            self, "Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"brainstorm-router {environment} cutover restorer: the gateway parameter, the "
                        "cutover journal and lock, one forced redeploy",
        )
        gateway, journal, lock = (param_arn(n) for n in
                                  (gateway_parameter_name, journal_parameter_name, lock_parameter_name))
        for sid, actions, resources in (
            # GetParameter also serves `name:version` (the previous version); history + unlabel are
            # for SSM's 100-version limit, as in the tool.
            ("GatewayConfig", ["ssm:GetParameter", "ssm:PutParameter", "ssm:LabelParameterVersion",
                               "ssm:GetParameterHistory", "ssm:UnlabelParameterVersion"], [gateway]),
            ("CutoverJournal", ["ssm:GetParameter", "ssm:PutParameter"], [journal]),
            # Put: it takes the run's lock (a token of its own) before it writes, so a live tool stops.
            ("CutoverLock", ["ssm:GetParameter", "ssm:PutParameter", "ssm:DeleteParameter"], [lock]),
            # Only used when the run's strategy is rolling (see restorer/handler.py).
            ("ForceRedeploy", ["ecs:UpdateService"], [service.service_arn]),
        ):
            self.role.add_to_policy(iam.PolicyStatement(sid=sid, actions=actions, resources=resources))
        self.log_group.grant_write(self.role)

        self.function = lambda_.Function(
            self, "Function",
            runtime=RUNTIME,
            handler=HANDLER,
            code=lambda_.Code.from_asset(stage_code()),
            role=self.role,
            log_group=self.log_group,
            timeout=Duration.seconds(60),
            memory_size=256,
            description="Puts the previous mTLS mode back when ECS fails or rolls back a deployment "
                        "during an unfinished cutover (docs/infrastructure.md)",
            environment={
                "GATEWAY_PARAMETER": gateway_parameter_name,
                "JOURNAL_PARAMETER": journal_parameter_name,
                "LOCK_PARAMETER": lock_parameter_name,
                "SERVICE_ARN": service.service_arn,
                "CLUSTER_NAME": cluster_name,
                "SERVICE_NAME": service_name,
            },
            # Invocation failures after Lambda's own retries land here, as do events EventBridge
            # could not deliver (the target below): one place to look when production did not heal.
            dead_letter_queue=self.dead_letters,
            retry_attempts=2,
        )
        self.rule = events.Rule(
            self, "DeploymentFailedOrRollingBack",
            description=f"{service_name}: a failed or rolling-back deployment -> the cutover restorer",
            event_pattern=events.EventPattern(
                source=["aws.ecs"], detail_type=[DETAIL_TYPE], resources=[service.service_arn],
                detail=EVENT_DETAIL,
            ),
        )
        self.rule.add_target(targets.LambdaFunction(
            self.function, dead_letter_queue=self.dead_letters,
            retry_attempts=8, max_event_age=Duration.hours(2),
        ))
