"""Shared by the incident benchmarks (exposure_before_after, harm_per_incident, sentinel_cost): a
sandbox world in this process, the tool in a process of its own against it (as an operator's
laptop would run it), and the harm read back from the world's own records.

The world (cutover.sandbox.world.sandbox_world) records every answer the unenrolled caller got,
with its time (`world.state()["traffic"]["unenrolled"]`, the same data as the admin `/state`),
every change of the gateway parameter as it saw it, and its ECS deployments. Nothing here is
taken from the tool's own account of what happened, except the journal's step times, which are
read from the world's SSM after the run and only used to split the time into phases.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from common import ROOT

from cutover.report import ConsoleUi
from cutover.sandbox.world import ENV_UNSET, SandboxWorld, sandbox_world
from envconfig import load


@contextmanager
def world(scenario: str, *, strategy: str | None = None, rollout_step: float | None = None,
          plan: dict[str, Any] | None = None) -> Iterator[SandboxWorld]:
    """A fresh world per trial: a rolled-back run leaves the caller's advisory lines and the
    tool's rollback probes in the log group, which the next run's 24 h gate would read."""
    cfg = load("sandbox")
    with sandbox_world(cfg, scenario=scenario, ui=ConsoleUi(io.StringIO()), strategy=strategy,
                       rollout_step=rollout_step, plan=plan) as w:
        yield w


def tool_env(w: SandboxWorld, code_root: Path = ROOT) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k not in ENV_UNSET}
    env.update(w.env)
    env["PYTHONPATH"] = str(code_root)
    env["CI"] = "1"  # never a terminal: no prompts
    return env


def tool_command(config_dir: Path | str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "cutover", "mtls", "--strict", "--yes", "--env", "sandbox",
            "--config-dir", str(config_dir), *extra]


def run_tool(w: SandboxWorld, cmd: list[str], *, code_root: Path = ROOT, timeout: float = 300) -> dict[str, Any]:
    """Run the tool in its own process (cwd = a scratch dir, so reports land there)."""
    scratch = w.directory / "tool-cwd"
    scratch.mkdir(exist_ok=True)
    t = time.time()
    proc = subprocess.run(cmd, cwd=scratch, env=tool_env(w, code_root), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    return {"code": proc.returncode, "started": t, "ended": time.time(), "stdout": proc.stdout[-4000:],
            "stderr": proc.stderr[-2000:]}


def journal(w: SandboxWorld, name: str | None = None) -> dict[str, Any] | None:
    """The run's journal as the tool left it in the world's SSM (either engine's format: both keep
    `steps` as {step, status, at, detail})."""
    ssm = w.client("ssm")
    try:
        return json.loads(ssm.get_parameter(Name=name or w.cfg.journal_parameter)["Parameter"]["Value"])
    except ssm.exceptions.ParameterNotFound:
        return None


def step_at(j: dict[str, Any] | None, step: str, status: str = "started") -> float | None:
    for s in (j or {}).get("steps", []):
        if s["step"] == step and s["status"] == status:
            return float(s["at"])
    return None


def settle(w: SandboxWorld, *, quiet: float = 1.0, limit: float = 30.0) -> None:
    """After the tool has exited: let the caller send a few more requests, so 'served again' is
    on record even when the rollback finished just before the tool's last line."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        answers = w.traffic.unenrolled.answers
        if answers and 200 <= answers[-1][1] < 300 and time.time() - answers[-1][0] < quiet:
            time.sleep(quiet)
            return
        time.sleep(0.2)


def rollback_done(state: dict[str, Any]) -> float | None:
    """When the last task started with the strict value stopped: from then on nothing can refuse
    the caller (rolling: the rollback's redeploy replaced it; canary: ECS stopped the green tasks
    as it shifted traffic back to blue). None while a strict task still runs."""
    strict = [t for t in state["tasks"] if t["mode"] == "strict"]
    if not strict or any(t["stopped_at"] is None for t in strict):
        return None
    return max(float(t["stopped_at"]) for t in strict)


def harm(state: dict[str, Any], *, detected_at: float | None = None) -> dict[str, Any]:
    """The unenrolled caller's incident, from the world's record of its answers.

    refused           the 403s it got (the world's own counter)
    first_403         its first refusal
    rollback_done     the last strict task stopped (`rollback_done`)
    served_again_at   its first served (2xx) request after the rollback: after both the last
                      strict task stopped and its last refusal. While tasks (rolling) or target
                      groups (canary) of both modes share the traffic, the caller alternates
                      between 403 and 200, so the next 2xx after the first 403 says little: the
                      world's per-incident list (`incidents`: first 403 -> next 2xx) splits one
                      incident into fragments (`fragments` below).
    exposure          served_again_at - first_403
    """
    u = state["traffic"]["unenrolled"]
    answers = [(float(t), int(s)) for t, s in u["answers"]]
    refused_times = [t for t, s in answers if s == 403]
    done = rollback_done(state)
    out: dict[str, Any] = {"sent": u["sent"], "refused": u["refused"], "served": u["served"], "errors": u["errors"],
                           "fragments": len(u["incidents"]), "answers_kept": len(answers),
                           "complete_record": len(answers) == u["sent"], "rollback_done": done}
    if not refused_times:
        return {**out, "first_403": None, "last_403": None, "served_again_at": None, "exposure": 0.0}
    first, last = refused_times[0], refused_times[-1]
    end = max(last, done or last)
    again = next((t for t, s in answers if t > end and 200 <= s < 300), None)
    out.update(first_403=first, last_403=last, served_again_at=again,
               exposure=round(again - first, 3) if again is not None else None)
    if detected_at is not None and again is not None:
        out["served_again_after_detection"] = round(again - detected_at, 3)
    return out


def parameter_back(state: dict[str, Any], flip_at: float | None) -> float | None:
    """When the world saw the gateway parameter leave strict again after the flip."""
    if flip_at is None:
        return None
    return next((float(t) for t, _, m in state["parameter_changes"] if t > flip_at and m != "strict"), None)
