"""The gateway's configuration document as data: one SSM parameter per environment.

Tasks receive it through ECS `secrets` at start, so a change only takes effect after a new
deployment (`gateway.*` is restart-class), and ECS's own circuit-breaker rollback would re-read
the *current* value: undoing a bad flip is the cutover tool's job, not ECS's.
"""

from __future__ import annotations

from aws_cdk import aws_ssm as ssm
from constructs import Construct

from envconfig import render_document


class GatewayConfig(Construct):
    """`/brainstorm-router/<env>/gateway/config`: a String parameter holding YAML."""

    def __init__(self, scope: Construct, id: str, *, parameter_name: str, document: dict) -> None:
        super().__init__(scope, id)
        self.parameter = ssm.StringParameter(
            self, "Parameter",
            parameter_name=parameter_name,
            string_value=render_document(document),
            tier=ssm.ParameterTier.STANDARD,
            description="brainstorm-router gateway config (YAML); read by each task at start. "
                        "tls.mtls.meshWritesEnforcement is flipped by `python -m cutover mtls`.",
        )
