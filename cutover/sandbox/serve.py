"""`python -m cutover.sandbox serve`: host one world in its own process until SIGTERM/SIGINT, for
tests and benchmarks that run the tool in another process.

    python -m cutover.sandbox serve --scenario unenrolled-caller --strategy canary \\
        --rollout-step 2 --world-file /tmp/world.json

When the world is up it writes the world file (atomically: a temporary file renamed into place),
JSON with:
  endpoint     moto's URL (http://127.0.0.1:PORT)
  env          the variables a boto3 client of the tool needs (AWS_ENDPOINT_URL, keys, region)
  env_unset    variables to remove from the tool's environment (a profile or session token would
               point boto3 elsewhere)
  config_dir   holds <env_name>.yaml pointing at this world: run the tool as
               `python -m cutover mtls --strict --env sandbox --config-dir DIR --yes` with `env`
  env_name     the environment name (sandbox)
  front_url    the production listener (https://127.0.0.1:PORT)
  test_url     the test listener (canary and blue_green), or null
  admin_url    read-only JSON about the world: /state, /tasks, /traffic, /events (sandbox/admin.py)
  scenario, strategy, account, pid, directory (the world's private temp dir)
On SIGTERM or SIGINT the world is torn down (ports closed, temp dir removed), the world file is
deleted and the process exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from cutover.sandbox.scenarios import SCENARIOS, STRATEGIES


def write_atomically(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def world_info(world: Any) -> dict[str, Any]:
    from cutover.sandbox.world import ENV_UNSET

    return {"endpoint": world.endpoint, "env": world.env, "env_unset": list(ENV_UNSET),
            "config_dir": str(world.config_dir), "env_name": world.cfg.environment,
            "front_url": world.front_url, "test_url": world.test_url, "admin_url": world.admin_url,
            "scenario": world.scenario, "strategy": world.strategy, "account": world.account,
            "pid": os.getpid(), "directory": str(world.directory)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cutover.sandbox", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="host a world until SIGTERM/SIGINT and describe it in a world file")
    s.add_argument("--scenario", default="clean", choices=list(SCENARIOS))
    s.add_argument("--strategy", choices=list(STRATEGIES), help="default: the config's, else rolling")
    s.add_argument("--rollout-step", type=float, metavar="SECONDS", help="seconds for one task to start (default 0.6)")
    s.add_argument("--seconds-per-minute", type=float, metavar="SECONDS",
                   help="the time scale: sandbox seconds per configured minute (default 1)")
    s.add_argument("--world-file", type=Path, required=True)
    s.add_argument("--env", default="sandbox", help="the config to build the world from (default sandbox)")
    s.add_argument("--config-dir", type=Path, help="where <env>.yaml lives (default: the repository's config/)")
    args = ap.parse_args(argv)

    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    import envconfig
    from cutover.report import ConsoleUi
    from cutover.sandbox.world import sandbox_world

    cfg = envconfig.load(args.env, args.config_dir or envconfig.DEFAULT_CONFIG_DIR)
    plan = {"seconds_per_minute": args.seconds_per_minute} if args.seconds_per_minute else None
    ui = ConsoleUi(sys.stderr)
    try:
        with sandbox_world(cfg, scenario=args.scenario, ui=ui, strategy=args.strategy,
                           rollout_step=args.rollout_step, plan=plan, admin=True) as world:
            write_atomically(args.world_file, world_info(world))
            try:
                while not stop.wait(0.2):
                    pass
            finally:
                args.world_file.unlink(missing_ok=True)
    finally:
        args.world_file.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
