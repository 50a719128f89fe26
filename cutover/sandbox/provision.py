"""Create, through plain boto3 calls, the AWS side of an environment as the stack would leave it:
the gateway config parameter, cluster + task definition + service, log group, guard alarms.

Used by the sandbox (against moto's server) and by the tests (under mock_aws). It needs no moto
import itself.
"""

from __future__ import annotations

from typing import Any

from cutover.sandbox.alarms import legitimate_403_alarm_name
from envconfig import EnvConfig, render_document

ACCOUNT = "123456789012"  # moto's default account


def provision(cfg: EnvConfig, clients: dict[str, Any], *,
              deployment_configuration: dict[str, Any] | None = None) -> dict[str, str]:
    """`deployment_configuration`: ECS's deploymentConfiguration for the service (the sandbox
    passes its strategy: ROLLING or CANARY with canaryConfiguration, bake time and alarms)."""
    ssm, ecs, logs, cw = clients["ssm"], clients["ecs"], clients["logs"], clients["cloudwatch"]
    ssm.put_parameter(Name=cfg.gateway.parameter_name, Value=render_document(cfg.gateway.document),
                      Type="String", Tier="Standard")
    logs.create_log_group(logGroupName=cfg.observability.log_group_name)
    ecs.create_cluster(clusterName=cfg.service.cluster_name)
    td = ecs.register_task_definition(
        family=f"{cfg.service.service_name}-task", requiresCompatibilities=["FARGATE"], networkMode="awsvpc",
        cpu=str(cfg.service.cpu), memory=str(cfg.service.memory_mib),
        containerDefinitions=[{
            "name": "gateway", "image": cfg.service.image, "essential": True,
            "portMappings": [{"containerPort": cfg.service.container_port}],
            "environment": [{"name": "DATABASE_POOL_SIZE", "value": str(cfg.database.pool_size)}],
            "secrets": [{"name": "GATEWAY_CONFIG", "valueFrom": cfg.gateway.parameter_name}],
        }],
    )["taskDefinition"]["taskDefinitionArn"]
    ecs.create_service(
        cluster=cfg.service.cluster_name, serviceName=cfg.service.service_name, taskDefinition=td,
        desiredCount=cfg.service.desired_count, launchType="FARGATE",
        deploymentController={"type": "ECS"},
        deploymentConfiguration=deployment_configuration or {
            "maximumPercent": 200, "minimumHealthyPercent": 100,
            "deploymentCircuitBreaker": {"enable": True, "rollback": True}},
    )
    for name in (*cfg.observability.guard_alarms, legitimate_403_alarm_name(cfg)):
        cw.put_metric_alarm(AlarmName=name, MetricName="Sandbox", Namespace="BrainstormRouter/sandbox",
                            Statistic="Sum", Period=60, EvaluationPeriods=1, Threshold=1,
                            ComparisonOperator="GreaterThanOrEqualToThreshold", TreatMissingData="notBreaching")
    return {"task_definition": td}
