"""Each sandbox scenario end to end through the CLI as a subprocess: real ports, real TLS, moto's
server over real HTTP. Asserts the exit code, the final parameter and the gateway afterwards."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.e2e

# Short windows through the same code path as the default 20 s one.
FAST = ["--watch", "6s", "--poll", "1s"]


def cutover(tmp_path, *argv: str) -> tuple[int, str, dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = subprocess.run([sys.executable, "-m", "cutover", *argv, "--json", "--report", str(tmp_path / "r.md")],
                          cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=180, stdin=subprocess.DEVNULL)
    return proc.returncode, proc.stderr, json.loads(proc.stdout)


def after(log: str) -> tuple[list[str], int]:
    m = re.search(r"after the run the tasks run (.+?); POST \S+ without a client cert \(caller brainstorm-cli\) -> (\d+)",
                  log)
    assert m, log[-2000:]
    return m.group(1).split(", "), int(m.group(2))


def versions(result: dict) -> list[str]:
    return [s["detail"] for s in result["journal"]["steps"] if s["step"] in ("flip", "restore") and s["status"] == "done"]


def test_clean_holds_strict_exit_0(tmp_path):
    code, log, result = cutover(tmp_path, "mtls", "--strict", "--sandbox", "--yes", *FAST)
    assert code == 0, log[-3000:]
    assert result["outcome"] == "done" and result["journal"]["new_version"] == 2
    assert all(p["ok"] for p in result["probes"]) and len(result["probes"]) == 4 * 5, "routes x kinds, sentinel included"
    assert result["journal"]["sentinel"] == "verified"
    modes, status = after(log)
    assert modes == ["strict", "strict"] and status == 403
    assert result["watch"]["mesh_write_requests"] > 0 and result["watch"]["forbidden"].get("legitimate", 0) == 0
    report = (tmp_path / "r.md").read_text()
    assert "## Pre-cutover gate" in report and "| \"mtls-advisory\" | 0 |" in report and "## Watch" in report
    assert "watch: " in log and " left | " in log, "countdown shown"


def test_unenrolled_caller_is_caught_and_rolled_back_exit_4(tmp_path):
    code, log, result = cutover(tmp_path, "mtls", "--strict", "--sandbox", "--yes", "--scenario", "unenrolled-caller",
                                "--watch", "20s", "--poll", "1s")
    assert code == 4, log[-3000:]
    assert "legitimate caller 'brainstorm-cli' got 403" in result["message"]
    assert versions(result) == ["advisory -> strict: v1 -> v2", "v2 -> v3 (= v1)"]
    modes, status = after(log)
    assert modes == ["advisory", "advisory"] and status == 200, "the caller is served again"


def test_bypass_traffic_gate_red_exit_3_nothing_changed(tmp_path):
    code, log, result = cutover(tmp_path, "mtls", "--strict", "--sandbox", "--yes", "--scenario", "bypass-traffic")
    assert code == 3, log[-3000:]
    assert result["gate"]["green"] is False and result["gate"]["patterns"]["mtls-advisory"] == 3
    assert result["gate"]["excluded"] == 10, "the [api/cold-start] timing lines do not count"
    assert result["journal"] is None, "nothing was written: not even a journal"
    modes, status = after(log)
    assert modes == ["advisory", "advisory"] and status == 200


def test_rollout_fails_parameter_restored_exit_4(tmp_path):
    code, log, result = cutover(tmp_path, "mtls", "--strict", "--sandbox", "--yes", "--scenario", "rollout-fails",
                                *FAST)
    assert code == 4, log[-3000:]
    assert "FAILED" in result["message"]
    # The tool and the restorer (EventBridge on the FAILED event) race to the same restore rule:
    # whoever writes first restores v1's bytes, the other finds nothing to write.
    restored = [s["detail"] for s in result["journal"]["steps"] if s["step"] == "restore" and s["status"] == "done"]
    assert restored and result["journal"]["state"] == "rolled_back"
    modes, status = after(log)
    assert modes == ["advisory", "advisory"] and status == 200


def test_nothing_left_listening_after_a_run(tmp_path):
    code, log, result = cutover(tmp_path, "gate", "--sandbox")
    assert code == 0
    ports = re.findall(r"127\.0\.0\.1:(\d+)", log)
    assert ports
    import socket
    for port in set(ports):
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", int(port))) != 0, f"port {port} still open"


def test_ctrl_c_during_the_watch_records_it_and_stops_everything(tmp_path):
    import signal
    import socket
    import time

    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = subprocess.Popen([sys.executable, "-m", "cutover", "mtls", "--strict", "--sandbox", "--yes",
                             "--watch", "5m", "--poll", "1s", "--report", str(tmp_path / "r.md")],
                            cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
    seen = []
    deadline = time.monotonic() + 120
    for line in proc.stdout:
        seen.append(line)
        if "watch: " in line and " left" in line:
            proc.send_signal(signal.SIGINT)
            break
        assert time.monotonic() < deadline, "".join(seen)
    rest, _ = proc.communicate(timeout=60)
    log = "".join(seen) + rest
    assert proc.returncode == 1, log[-3000:]
    assert "RESULT: interrupted (exit 1)" in log
    assert "python -m cutover resume --env sandbox" in log and "python -m cutover rollback --env sandbox" in log
    for port in set(re.findall(r"127\.0\.0\.1:(\d+)", log)):
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", int(port))) != 0, f"port {port} still open"
