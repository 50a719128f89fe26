"""The sandbox world itself, in process: real ports, real TLS, moto's server over real HTTP.

What the world promises the tool and the benchmarks: its own config and environment (nothing in
os.environ), its own AWS account, everything removed when it ends."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from cutover.report import ConsoleUi
from cutover.sandbox.world import load_world_config, sandbox_world
from envconfig import load
from tests.conftest import ROOT, default_sigint, until

pytestmark = pytest.mark.e2e


def quiet() -> ConsoleUi:
    return ConsoleUi(io.StringIO())


def is_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def cfg():
    return load("sandbox")


@pytest.fixture(scope="module")
def world(cfg):
    with sandbox_world(cfg, scenario="clean", ui=quiet()) as w:
        yield w


# ---------------------------------------------------------------- 1. the world API


def test_the_world_leaves_os_environ_alone(cfg):
    before = dict(os.environ)
    with sandbox_world(cfg, scenario="clean", ui=quiet()) as w:
        inside = dict(os.environ)
        env = w.env
    assert inside == before and dict(os.environ) == before
    assert set(env) == {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"}


def test_env_is_all_a_boto3_client_needs_and_the_account_is_the_worlds_own(world):
    import boto3

    e = world.env
    session = boto3.session.Session(aws_access_key_id=e["AWS_ACCESS_KEY_ID"],
                                    aws_secret_access_key=e["AWS_SECRET_ACCESS_KEY"],
                                    region_name=e["AWS_DEFAULT_REGION"])
    sts = session.client("sts", endpoint_url=e["AWS_ENDPOINT_URL"])
    assert sts.get_caller_identity()["Account"] == world.account
    assert world.account != "123456789012", "not moto's shared default account"
    ssm = session.client("ssm", endpoint_url=e["AWS_ENDPOINT_URL"])
    value = ssm.get_parameter(Name=world.cfg.gateway.parameter_name)["Parameter"]["Value"]
    assert "meshWritesEnforcement: advisory" in value


def test_cfg_points_at_the_world_and_its_copy_on_disk_says_the_same(world, cfg):
    p = world.cfg.cutover.probes
    assert p.base_url == world.front_url and world.endpoint == world.env["AWS_ENDPOINT_URL"]
    for path in (p.client_cert, p.client_key, p.ca_bundle, p.sentinel.api_key_file):
        assert Path(path).is_file() and Path(path).is_relative_to(world.directory)
    assert p.sentinel.api_key_env is None and p.sentinel.caller == cfg.cutover.probes.sentinel.caller
    assert world.cfg.source == str(world.config_dir / "sandbox.yaml")
    assert load_world_config(world.config_dir) == world.cfg, "another process reads the same config"
    assert cfg.cutover.probes.base_url != world.front_url, "the caller's config object is not mutated"
    assert world.pool_stats() == {} and world.front.target_timeout == 10, "no pool modelled unless asked"


def test_a_world_asked_for_a_pool_gives_each_task_the_configs_pool_and_timeout(cfg):
    import dataclasses

    small = dataclasses.replace(cfg, database=dataclasses.replace(cfg.database, pool_size=1))
    with sandbox_world(small, scenario="clean", ui=quiet(), pool_hold=0.4) as w:
        w.traffic.stop()
        stats = w.pool_stats()
        assert len(stats) == 2 and {(s["size"], s["hold_seconds"]) for s in stats.values()} == {(1, 0.4)}
        assert {s["timeout_seconds"] for s in stats.values()} == {float(cfg.service.request_timeout)}
        assert w.front.target_timeout == cfg.service.idle_timeout_seconds, "the ALB waits as long as in the stack"
        assert load_world_config(w.config_dir) == w.cfg and w.cfg.database.pool_size == 1
        from cutover.sandbox.traffic import post

        statuses: list[int] = []
        threads = [threading.Thread(target=lambda: statuses.append(post(
            "127.0.0.1", port_of(w.front_url), w.traffic.plain, "/v1/chat/completions", key=w.key_of("brainstorm-cli"),
            agent="pool-test"))) for _ in range(4)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert statuses == [200] * 4 and time.monotonic() - t0 >= 0.75, "4 requests, 2 connections: two waited"


def test_the_sentinel_key_is_one_the_gateway_knows_as_the_sentinel(world):
    from cutover.sandbox.traffic import post

    key = Path(world.cfg.cutover.probes.sentinel.api_key_file).read_text().strip()
    assert world.api_keys[key] == world.cfg.cutover.probes.sentinel.caller
    port = port_of(world.front_url)
    status = post("127.0.0.1", port, world.traffic.plain, "/v1/agent/delegate", key=key, agent="sentinel-test")
    assert status == 200, "advisory serves an authenticated caller without a certificate"


def test_everything_is_removed_when_the_world_fails(cfg):
    with pytest.raises(RuntimeError, match="boom"), sandbox_world(cfg, scenario="clean", ui=quiet()) as w:
        directory, ports = w.directory, [port_of(w.endpoint), port_of(w.front_url)]
        key = Path(w.cfg.cutover.probes.client_key)
        assert key.is_file() and all(is_open(p) for p in ports)
        raise RuntimeError("boom")
    assert not directory.exists(), "the private keys went with the world"
    assert not any(is_open(p) for p in ports)


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 1)])
def test_sigterm_and_ctrl_c_remove_the_private_keys(tmp_path, sig, code):
    script = textwrap.dedent("""
        import io, sys, time
        from cutover.report import ConsoleUi
        from cutover.sandbox.world import sandbox_world
        from envconfig import load
        try:
            with sandbox_world(load("sandbox"), scenario="clean", ui=ConsoleUi(io.StringIO())) as w:
                print(w.directory, flush=True)
                time.sleep(60)
        except KeyboardInterrupt:
            sys.exit(1)
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_sigint)
    try:
        directory = Path(proc.stdout.readline().strip())
        assert directory.is_dir(), proc.stderr.read()
        proc.send_signal(sig)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code
    assert not directory.exists()


def service(world) -> dict:
    c = world.cfg.service
    return world.client("ecs").describe_services(cluster=c.cluster_name, services=[c.service_name])["services"][0]


def running_tasks(world) -> list[dict]:
    c = world.cfg.service
    ecs = world.client("ecs")
    arns = ecs.list_tasks(cluster=c.cluster_name, serviceName=c.service_name, desiredStatus="RUNNING")["taskArns"]
    return ecs.describe_tasks(cluster=c.cluster_name, tasks=arns)["tasks"] if arns else []


# ---------------------------------------------------------------- 3. tasks and their log streams


def test_list_and_describe_tasks_are_exactly_the_running_sandbox_tasks(world):
    tasks = running_tasks(world)
    gateway_ids = {t.id for t in world.front.tasks}
    assert {t["taskArn"].rsplit("/", 1)[1] for t in tasks} == gateway_ids and len(gateway_ids) == 2
    svc = service(world)
    primary = next(d for d in svc["deployments"] if d["status"] == "PRIMARY")
    for t in tasks:
        task_id = t["taskArn"].rsplit("/", 1)[1]
        assert len(task_id) == 32 and int(task_id, 16) >= 0
        assert t["lastStatus"] == "RUNNING" and t["desiredStatus"] == "RUNNING"
        assert t["startedBy"] == primary["id"] and t["startedBy"].startswith("ecs-svc/")
        assert t["taskDefinitionArn"] == svc["taskDefinition"] and t["group"] == f"service:{svc['serviceName']}"
        assert t["containers"][0]["name"] == "gateway"


def test_each_task_logs_to_its_own_awslogs_stream(world):
    logs = world.client("logs")
    group = world.cfg.observability.log_group_name
    for task in world.front.tasks:
        stream = f"gateway/gateway/{task.id}"
        events = until(lambda s=stream: logs.filter_log_events(logGroupName=group, logStreamNames=[s])["events"])
        lines = [json.loads(e["message"]) for e in events if e["message"].startswith("{")]
        assert lines and {line["task"] for line in lines} == {task.id}
        assert {"path", "status", "caller", "userAgent", "cutoverRunId"} <= set(lines[0])


def test_a_rolling_deployment_replaces_tasks_and_the_api_follows(cfg):
    with sandbox_world(cfg, scenario="clean", ui=quiet(), rollout_step=0.1) as w:
        c = w.cfg.service
        ecs = w.client("ecs")
        old = {t["taskArn"] for t in running_tasks(w)}
        resp = ecs.update_service(cluster=c.cluster_name, service=c.service_name, forceNewDeployment=True)
        deps = resp["service"]["deployments"]
        assert [(d["status"], d["rolloutState"]) for d in deps] == [("PRIMARY", "IN_PROGRESS"), ("ACTIVE", "COMPLETED")]
        new_id = deps[0]["id"]
        until(lambda: [d["rolloutState"] for d in service(w)["deployments"]] == ["COMPLETED"])
        tasks = running_tasks(w)
        assert len(tasks) == 2 and not old & {t["taskArn"] for t in tasks}
        assert {t["startedBy"] for t in tasks} == {new_id}
        stopped = ecs.list_tasks(cluster=c.cluster_name, serviceName=c.service_name, desiredStatus="STOPPED")
        assert set(stopped["taskArns"]) == old
        gone = ecs.describe_tasks(cluster=c.cluster_name, tasks=list(old))["tasks"]
        assert {t["lastStatus"] for t in gone} == {"STOPPED"} and all(t.get("stoppedReason") for t in gone)
        assert {t.id for t in w.front.tasks} == {t["taskArn"].rsplit("/", 1)[1] for t in tasks}


# ---------------------------------------------------------------- 4. the passthrough hole, per scenario


def go_strict(world) -> None:
    """Flip the parameter and redeploy, as the tool would (fast rollout), until every task is strict."""
    c = world.cfg
    ssm = world.client("ssm")
    doc = ssm.get_parameter(Name=c.gateway.parameter_name)["Parameter"]["Value"]
    ssm.put_parameter(Name=c.gateway.parameter_name, Value=doc.replace("advisory", "strict"), Type="String",
                      Overwrite=True)
    world.client("ecs").update_service(cluster=c.service.cluster_name, service=c.service.service_name,
                                       forceNewDeployment=True)
    until(lambda: [d["rolloutState"] for d in service(world)["deployments"]] == ["COMPLETED"])
    assert {t.mode for t in world.front.tasks} == {"strict"}


def task_lines(world, status: int) -> list[dict]:
    """Access lines with `status` from the running tasks' own streams, as CloudWatch has them."""
    world.shipper.flush()
    logs = world.client("logs")
    streams = [f"gateway/gateway/{t.id}" for t in world.front.tasks]
    events = logs.filter_log_events(logGroupName=world.cfg.observability.log_group_name,
                                    logStreamNames=streams)["events"]
    lines = [json.loads(e["message"]) for e in events if e["message"].startswith("{")]
    return [x for x in lines if x["status"] == status and x["path"].startswith("/v1/agent/")]


# scenario: (a self-signed cert with the caller's key, the caller's 403 line names the caller)
EXPECT = {"clean": (403, True), "untrusted-cert": (200, True), "blind-watch": (403, False)}


@pytest.mark.parametrize("scenario", list(EXPECT))
def test_scenarios_plant_their_gateway_bug_and_nothing_else(cfg, scenario, tmp_path):
    import ssl

    from cutover.sandbox.pki import make_self_signed
    from cutover.sandbox.traffic import post

    with sandbox_world(cfg, scenario=scenario, ui=quiet(), rollout_step=0.05) as w:
        go_strict(w)
        port = port_of(w.front_url)
        key = w.key_of("brainstorm-cli")
        ctx = ssl.create_default_context(cafile=w.pki.ca_cert)
        ctx.load_cert_chain(*(lambda p: (p.cert, p.key))(make_self_signed(tmp_path, "stranger")))
        with_foreign_cert = post("127.0.0.1", port, ctx, "/v1/agent/delegate", key=key, agent="brainstorm-cli/0.9")
        enrolled = post("127.0.0.1", port, w.traffic.enrolled_ctx, "/v1/agent/delegate", key=key, agent="x/1")
        without = post("127.0.0.1", port, w.traffic.plain, "/v1/agent/task-runs", key=key, agent="brainstorm-cli/0.9")
        assert (with_foreign_cert, enrolled, without) == (EXPECT[scenario][0], 200, 403)
        mine = until(lambda: [x for x in task_lines(w, 403) if x["userAgent"] == "brainstorm-cli/0.9"
                              and x["path"] == "/v1/agent/task-runs"])
        assert [x["caller"] for x in mine] == (["brainstorm-cli"] if EXPECT[scenario][1] else [""])


# ---------------------------------------------------------------- 5. callers, the sentinel, the access-log fields


def set_mode(world, mode: str, *, redeploy: bool) -> None:
    c = world.cfg
    ssm = world.client("ssm")
    doc = ssm.get_parameter(Name=c.gateway.parameter_name)["Parameter"]["Value"]
    other = "advisory" if mode == "strict" else "strict"
    ssm.put_parameter(Name=c.gateway.parameter_name, Value=doc.replace(f"Enforcement: {other}", f"Enforcement: {mode}"),
                      Type="String", Overwrite=True)
    if redeploy:
        world.client("ecs").update_service(cluster=c.service.cluster_name, service=c.service.service_name,
                                           forceNewDeployment=True)


def test_the_unenrolled_caller_starts_at_the_flip_and_its_incident_is_counted(cfg):
    with sandbox_world(cfg, scenario="unenrolled-caller", ui=quiet(), rollout_step=0.4) as w:
        time.sleep(0.5)  # a steady caller at 5 req/s would have sent a couple by now, had it started
        assert w.traffic.unenrolled.summary()["sent"] == 0, "nothing before the flip"
        set_mode(w, "strict", redeploy=False)
        flip_at = until(lambda: next((t for t, _, m in w.parameter_changes if m == "strict"), None))
        until(lambda: w.traffic.unenrolled.summary()["served"] >= 2)  # old (advisory) tasks still serve it
        set_mode(w, "strict", redeploy=True)
        until(lambda: w.traffic.unenrolled.summary()["refused"] >= 3)  # from the first strict task on
        set_mode(w, "advisory", redeploy=True)
        s = until(lambda: (lambda x: x if x["incidents"] and x["incidents"][-1]["closed"] else None)(
            w.traffic.unenrolled.summary()))
        assert s["first_at"] >= flip_at - 0.2 and s["first_refused_at"] > s["first_at"]
        incident = s["incidents"][0]
        refused = [t for t, st in s["answers"] if st == 403]
        assert incident["refused"] == len(refused) == s["refused"] and len(s["incidents"]) == 1
        assert incident["exposure_seconds"] == pytest.approx(incident["served_again_at"] - refused[0], abs=0.01)
        assert incident["served_again_at"] > incident["last_refused_at"] == pytest.approx(refused[-1], abs=0.01)
        assert 0 < incident["exposure_seconds"] < 10
        rate = len(s["answers"]) / (s["answers"][-1][0] - s["answers"][0][0])
        assert 2 < rate < 7, f"a steady ~5 requests/s (slower on a loaded 2-core machine), got {rate:.1f}"


def test_access_lines_use_the_configured_field_names_and_the_sentinel_is_known(config_dir):
    import ssl

    from cutover.mtls import RUN_HEADER
    from cutover.sandbox.traffic import post

    path = config_dir / "sandbox.yaml"
    path.write_text(path.read_text().replace("caller_field: caller", "caller_field: principal")
                    .replace("run_id_field: cutoverRunId", "run_id_field: runId"))
    with sandbox_world(load("sandbox", config_dir), scenario="clean", ui=quiet(), rollout_step=0.05) as w:
        go_strict(w)
        sentinel = w.cfg.cutover.probes.sentinel
        key = Path(sentinel.api_key_file).read_text().strip()
        status = post("127.0.0.1", port_of(w.front_url), ssl.create_default_context(cafile=w.pki.ca_cert),
                      "/v1/agent/sub-agents", key=key, agent="brainstorm-cutover-probe/run-9",
                      headers={RUN_HEADER: "run-9"})
        assert status == 403
        line = until(lambda: [x for x in task_lines(w, 403) if x.get("runId") == "run-9"])[0]
        assert line["principal"] == sentinel.caller == "cutover-sentinel" and "caller" not in line
        assert line["task"] in {t.id for t in w.front.tasks}


def test_nothing_is_left_listening_once_the_world_is_gone(cfg):
    """Checked in this (still running) process: a socket a world leaked would still accept."""
    import socket
    from urllib.parse import urlsplit

    with sandbox_world(cfg, scenario="clean", ui=quiet(), strategy="canary") as w:
        ports = {name: urlsplit(url).port for name, url in
                 (("moto", w.endpoint), ("front", w.front_url), ("test", w.test_url))}
        ports.update({f"task-{t.id}": t.port for t in w.front.tasks})

        def accepting(port: int) -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0
        assert all(accepting(p) for p in ports.values()), "the check below can fail"
    still = {name: p for name, p in ports.items() if accepting(p)}
    assert not still, f"still listening after the world ended: {still}"
