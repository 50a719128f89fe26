"""Crashes for real: the tool in its own process against a world in another (real ports, real
TLS, moto's server over HTTP). A SIGKILL inside the rollback, and a lock-create reply dropped on
the wire, each end in a true state."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import boto3
import pytest

from tests.world_server import admin, run_tool, tool_env, world_server

pytestmark = pytest.mark.e2e


def ssm_of(world: dict):
    env = world["env"]
    return boto3.client("ssm", region_name=env["AWS_DEFAULT_REGION"], endpoint_url=env["AWS_ENDPOINT_URL"],
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])


def journal(ssm) -> dict | None:
    try:
        return json.loads(ssm.get_parameter(Name="/brainstorm-router/sandbox/cutover/journal")["Parameter"]["Value"])
    except ssm.exceptions.ParameterNotFound:
        return None


def param(ssm, version: int | None = None) -> str:
    name = "/brainstorm-router/sandbox/gateway/config" + (f":{version}" if version else "")
    return ssm.get_parameter(Name=name)["Parameter"]["Value"]


def lock_exists(ssm) -> bool:
    try:
        ssm.get_parameter(Name="/brainstorm-router/sandbox/cutover/lock")
        return True
    except ssm.exceptions.ParameterNotFound:
        return False


@pytest.mark.parametrize("kill_after", [("rollback", "started"), ("restore", "done"),
                                        ("rollback-redeploy", "started")], ids=lambda p: "-".join(p))
def test_a_sigkill_inside_the_rollback_is_finished_by_resume_from_another_process(tmp_path, kill_after):
    # A slow rollout (1 s per task) so the kill lands inside the rollback's own redeploy too.
    with world_server(tmp_path, scenario="unenrolled-caller", strategy="rolling", rollout_step=1.0) as world:
        ssm = ssm_of(world)
        cmd = [sys.executable, "-m", "cutover", "mtls", "--strict", "--yes", "--env", world["env_name"],
               "--config-dir", world["config_dir"], "--watch", "30s", "--poll", "1s"]
        tool = subprocess.Popen(cmd, cwd=world["directory"], env=tool_env(world), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        try:
            while time.monotonic() < deadline:
                j = journal(ssm)
                if j and any((s["step"], s["status"]) == kill_after for s in j["steps"]):
                    break
                assert tool.poll() is None, "the tool ended before the kill point"
                time.sleep(0.05)
            else:
                pytest.fail(f"never reached {kill_after}")
        finally:
            tool.kill()  # SIGKILL: no handler, no journal entry, no release
            tool.wait()
        assert journal(ssm)["state"] == "rolling_back" and lock_exists(ssm)

        refused = run_tool(world, "mtls", "--strict", "--yes")
        assert refused.returncode == 1 and "rollback --env sandbox" in refused.stdout, refused.stdout[-2000:]

        resumed = run_tool(world, "resume", "--yes", "--json")
        assert resumed.returncode == 4, resumed.stderr[-3000:]
        j = journal(ssm)
        assert j["state"] == "rolled_back" and not lock_exists(ssm)
        assert param(ssm) == param(ssm, 1), "the exact pre-cutover bytes"
        assert not [s for s in j["steps"] if s["step"] in ("watch", "finish") and s["status"] == "done"]
        running = [t for t in admin(world)["tasks"] if t["status"] == "RUNNING"]
        assert running and {t["mode"] for t in running} == {"advisory"}


class DropFirstLockReply(ThreadingHTTPServer):
    """A proxy in front of moto's server that forwards every request, but for the first lock create
    (PutParameter with Overwrite=false on the lock) closes the connection instead of answering:
    AWS applied the write, the tool never heard."""

    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream)
        self.dropped = 0
        self.guard = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request("POST", self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                drop = False
                if b'"Overwrite": false' in body and b"cutover/lock" in body:
                    with proxy.guard:
                        drop = proxy.dropped == 0 and resp.status == 200
                        proxy.dropped += drop
                if drop:
                    self.close_connection = True  # the reply never leaves
                    return
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("content-length", "connection", "transfer-encoding", "date", "server"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        super().__init__(("127.0.0.1", 0), Handler)


def test_a_lock_create_whose_reply_is_lost_is_still_ours(tmp_path):
    with world_server(tmp_path, scenario="clean", strategy="rolling", rollout_step=0.2) as world:
        proxy = DropFirstLockReply(world["env"]["AWS_ENDPOINT_URL"])
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        try:
            through_proxy = {**world, "env": {**world["env"],
                                              "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.server_address[1]}"}}
            proc = run_tool(through_proxy, "mtls", "--strict", "--yes", "--watch", "3s", "--poll", "1s", "--json")
        finally:
            proxy.shutdown()
            proxy.server_close()
        assert proxy.dropped == 1, "the reply was really dropped"
        assert proc.returncode == 0, proc.stderr[-3000:]
        ssm = ssm_of(world)
        assert journal(ssm)["state"] == "done" and not lock_exists(ssm)
