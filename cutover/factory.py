"""The one place an engine is assembled: the CLI, the tests and the benchmarks all call `build`,
each passing what it fakes (clients, clock, sleep, probes) and nothing else."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from envconfig import EnvConfig


def build(cfg: EnvConfig, *, ui: Any, aws: Any = None, clock: Callable[[], float] = time.time,
          sleep: Callable[[float], None] = time.sleep, probe: Callable[..., Any] | None = None,
          profile: str | None = None, region: str | None = None, endpoint_env: dict[str, str] | None = None,
          run_id: Callable[[], str] | None = None, sentinel_key: str | None = None) -> Any:
    """An engine for `cfg`. Without `aws`, boto3's standard chain (profile, env credentials,
    AWS_ENDPOINT_URL) builds the clients; `endpoint_env` (the sandbox's endpoint and credentials)
    is given to boto3 directly, never through os.environ."""
    from cutover.aws import Aws
    from cutover.engine import Cutover
    from cutover.probes import ProbeSpec, run_probes

    if aws is None:
        aws = Aws.from_environment(region=region or cfg.region, profile=profile, sleep=sleep, overrides=endpoint_env)
    return Cutover(cfg, aws=aws, clock=clock, sleep=sleep, probe=probe or run_probes,
                   probe_spec=ProbeSpec.from_config(cfg, sentinel_key=sentinel_key), ui=ui, run_id=run_id)
