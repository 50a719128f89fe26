"""Serve mode: a world in its own process, the tool in another (the shape of the wave-2 e2e tests)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from tests.world_server import admin, run_tool, world_server

pytestmark = pytest.mark.e2e


def is_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def ports(world: dict) -> dict[str, int]:
    urls = {k: world[k] for k in ("endpoint", "front_url", "test_url", "admin_url") if world[k]}
    return {k: int(u.rsplit(":", 1)[1]) for k, u in urls.items()}


def test_the_tool_runs_against_a_served_world_and_stop_leaves_nothing(tmp_path):
    with world_server(tmp_path, scenario="clean", strategy="canary") as world:
        on_disk = json.loads(Path(world["world_file"]).read_text())
        assert on_disk["env"] == world["env"] and set(world["env"]) == {
            "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"}
        open_ports = ports(world)
        assert set(open_ports) == {"endpoint", "front_url", "test_url", "admin_url"}
        assert len(set(open_ports.values())) == 4, "the admin endpoint has a port of its own"
        assert all(is_open(p) for p in open_ports.values()), "the check below can fail"

        proc = run_tool(world, "status")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "mode: advisory (/brainstorm-router/sandbox/gateway/config v1)" in proc.stdout
        assert "service: 2/2 running" in proc.stdout

        state = admin(world)
        running = [t for t in state["tasks"] if t["status"] == "RUNNING"]
        assert len(running) == 2 and {t["mode"] for t in running} == {"advisory"}
        assert all(len(t["id"]) == 32 and t["deployment"].startswith("ecs-svc/") for t in running)
        assert {t["target_group"] for t in running} == {state["production_target_group"]}
        assert state["traffic"]["enrolled"]["served"] > 0 and state["strategy"] == "canary"
        directory = Path(world["directory"])
        assert directory.is_dir()
        proc = world["process"]
    assert proc.returncode == 0, Path(world["log"]).read_text()
    assert not Path(world["world_file"]).exists() and not directory.exists()
    still = {k: p for k, p in open_ports.items() if is_open(p)}
    assert not still, f"still listening after stop: {still}"


def test_a_canary_that_moves_past_its_share_before_the_probes_pass_is_stopped(tmp_path):
    # A 0.25 s canary bake: ECS moves all production traffic long before any probe round can end.
    # The tool must not let more than the canary share reach strict tasks unprobed: it stops the
    # service deployment (ECS shifts traffic back to blue) and restores the parameter.
    with world_server(tmp_path, scenario="clean", strategy="canary", rollout_step=0.1,
                      seconds_per_minute=0.05) as world:
        proc = run_tool(world, "mtls", "--strict", "--yes", "--watch", "2s", "--poll", "1s", "--json",
                        "--report", str(tmp_path / "r.md"))
        assert proc.returncode == 4, proc.stderr[-3000:]
        result = json.loads(proc.stdout)
        assert "before its probes passed (canary limit 10%)" in result["message"]
        state = admin(world)
        running = [t for t in state["tasks"] if t["status"] == "RUNNING"]
        assert {t["mode"] for t in running} == {"advisory"}, "the old tasks serve again"
        assert state["parameter_changes"][-1][2] == "advisory"
