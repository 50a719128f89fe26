"""The `operator-vanishes` scenario: the tool runs in a process of its own against this world, and
that process is killed (SIGKILL, as a laptop that dies) as soon as its watch begins. Then a caller
without a certificate shows up while the deployment bakes. Nobody is at the keyboard: the
legitimate-403 alarm, ECS's deployment rollback and the restorer Lambda must undo it alone. The
story ends with `status`, read from the journal, saying who restored production.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

from cutover.exitcodes import ExitCode

WAIT = 180.0  # seconds for each stage of the story (the sandbox plays minutes as seconds)
ROLLING_WAIT = 10.0  # how long a rolling world is given to show that nobody restores it


def _journal(world: Any) -> dict | None:
    ssm = world.client("ssm")
    try:
        return json.loads(ssm.get_parameter(Name=world.cfg.journal_parameter)["Parameter"]["Value"])
    except ssm.exceptions.ParameterNotFound:
        return None


def _until(what: str, check: Any, ui: Any, *, wait: float = WAIT) -> Any:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(f"operator-vanishes: {what} did not happen within {wait:.0f}s")


def play(world: Any, ui: Any, *, extra_args: list[str]) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(world.env)
    cmd = [sys.executable, "-m", "cutover", "mtls", "--strict", "--yes", "--env", world.cfg.environment,
           "--config-dir", str(world.config_dir), *extra_args]
    ui.info(f"sandbox: operator-vanishes: running the tool in its own process: {' '.join(cmd[2:])}")
    world.driven = True  # the caller comes after the kill, not before: the tool must not see it
    tool = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        _until("the tool's watch", lambda: (j := _journal(world)) and j["state"] == "watching", ui)
    finally:
        tool.kill()  # SIGKILL: no handler runs, nothing is released, nothing is recorded
        tool.wait()
    ui.warn("operator-vanishes: the tool process was killed during the watch (the laptop died); the lock and "
            "the journal say 'watching' and nobody is watching")
    ui.info("sandbox: a caller without a certificate starts calling now"
            + (", while the deployment bakes" if world.strategy != "rolling" else ""))
    if world.unenrolled_gate is not None:
        world.unenrolled_gate.set()
    # Canary: the alarm, ECS's rollback and the restorer take a few (scaled) minutes at most. Rolling:
    # nothing watches a deployment that has finished, so nothing will come; say so after ten alarm
    # periods (the sandbox plays a minute as a second).
    settled = ("rolled_back", "rollback_failed", "done", "stopped", "watch_cut_short")
    try:
        j = _until("a rollback with nobody at the keyboard",
                   lambda: (j := _journal(world)) and j["state"] in settled and j, ui,
                   wait=WAIT if world.strategy != "rolling" else ROLLING_WAIT)
    except TimeoutError as exc:
        ui.warn(str(exc))
        j = _journal(world) or {}
    restored_by = (j.get("restore") or {}).get("by")
    from cutover.factory import build

    engine = build(world.cfg, ui=ui, endpoint_env=world.env)
    status = engine.status()
    ui.info(f"status: {status.message}")
    if j.get("state") == "rolled_back" and restored_by == "restorer":
        ui.info(f"RESULT: rolled_back (exit 4): production is back on {j.get('previous_mode')} with nobody at the "
                f"keyboard: {j.get('rollback_reason')}")
        return int(ExitCode.ROLLED_BACK)
    why = ("a rolling deployment has no bake: once it has finished no deployment alarm watches it"
           if world.strategy == "rolling" else f"the journal says {j.get('state')}")
    ui.info("next: in production an operator would now run `python -m cutover rollback --env "
            f"{world.cfg.environment}` (it takes over the dead run from its journal); this world ends with the "
            "command, so here the story stops")
    ui.info(f"RESULT: rollback_failed (exit 5): nobody restored production ({why}); the caller is still refused")
    return int(ExitCode.ROLLBACK_FAILED)
