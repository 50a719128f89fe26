#!/usr/bin/env python3
"""CDK entry point: one stack per config/<env>.yaml, each checked by cdk-nag at synth."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from aws_cdk import App, Validations
from cdk_nag import AwsSolutionsChecks

from envconfig import DEFAULT_CONFIG_DIR, ConfigError, load_all
from stacks.gateway_stack import GatewayStack


def build_app(app: App | None = None) -> App:
    # Validate every environment before building anything: a bad file stops synth in one line.
    configs = load_all(Path(os.environ.get("BRAINSTORM_CONFIG_DIR", DEFAULT_CONFIG_DIR)))
    app = app or App()
    for config in configs:
        GatewayStack(app, config=config)
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app


if __name__ == "__main__":
    try:
        build_app().synth()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
