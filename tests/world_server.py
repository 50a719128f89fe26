"""Host a sandbox world in its own process for a test: `python -m cutover.sandbox serve`.

    with world_server(tmp_path, scenario="unenrolled-caller", strategy="canary") as world:
        proc = run_tool(world, "mtls", "--strict", "--yes")
        state = admin(world, "/state")

`world` is the world file's JSON (see cutover/sandbox/serve.py). The server is always stopped
(SIGTERM, then SIGKILL if it does not go within 20 s), whatever the test did.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.conftest import ROOT


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return {**env, "PYTHONPATH": str(ROOT)}


@contextmanager
def world_server(tmp_path: Path, *, scenario: str = "clean", strategy: str | None = None,
                 rollout_step: float | None = None, seconds_per_minute: float | None = None,
                 timeout: float = 60) -> Iterator[dict[str, Any]]:
    world_file = tmp_path / f"world-{uuid.uuid4().hex[:8]}.json"
    log = world_file.with_suffix(".log")
    cmd = [sys.executable, "-m", "cutover.sandbox", "serve", "--scenario", scenario, "--world-file", str(world_file)]
    if strategy:
        cmd += ["--strategy", strategy]
    if rollout_step is not None:
        cmd += ["--rollout-step", str(rollout_step)]
    if seconds_per_minute is not None:
        cmd += ["--seconds-per-minute", str(seconds_per_minute)]
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=base_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=err)
    info: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + timeout
        while not world_file.exists():
            if proc.poll() is not None:
                raise RuntimeError(f"the world server exited {proc.returncode}:\n{log.read_text()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no world file after {timeout}s:\n{log.read_text()}")
            time.sleep(0.05)
        info = json.loads(world_file.read_text())
        info.update(world_file=str(world_file), log=str(log), process=proc)
        yield info
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def tool_env(world: dict[str, Any]) -> dict[str, str]:
    env = base_env()
    for k in world["env_unset"]:
        env.pop(k, None)
    return {**env, **world["env"]}


def run_tool(world: dict[str, Any], *argv: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """The unchanged tool, in its own process, against the world."""
    cmd = [sys.executable, "-m", "cutover", *argv, "--env", world["env_name"], "--config-dir", world["config_dir"]]
    # cwd: the world's own directory, so default report files (reports/...) die with the world
    return subprocess.run(cmd, cwd=world["directory"], env=tool_env(world), capture_output=True, text=True,
                          timeout=timeout,
                          stdin=subprocess.DEVNULL)


def admin(world: dict[str, Any], path: str = "/state") -> Any:
    with urllib.request.urlopen(world["admin_url"] + path, timeout=10) as resp:
        return json.loads(resp.read())
