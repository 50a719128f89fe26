#!/usr/bin/env python3
"""CDK entry point: one stack per config/<env>.yaml, each checked by cdk-nag at synth."""

from __future__ import annotations

import sys

from aws_cdk import App, Validations
from cdk_nag import AwsSolutionsChecks

from cutover.config import ConfigError, load_all
from stacks.gateway_stack import GatewayStack


def build_app(app: App | None = None) -> App:
    app = app or App()
    for config in load_all():
        GatewayStack(app, config=config)
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app


if __name__ == "__main__":
    try:
        build_app().synth()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
