"""Each sandbox scenario end to end through the CLI as a subprocess: real ports, real TLS, moto's
server over real HTTP. Asserts the exit code, the final parameter and the gateway afterwards."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT, default_sigint

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


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_ctrl_c_or_sigterm_during_the_watch_records_it_and_stops_everything(tmp_path, signame):
    """Without a terminal, Ctrl-C and SIGTERM alike: the interruption recorded, the lock kept, how to
    go on printed; every port the world opened closed and its private keys removed."""
    import signal
    import socket
    import time

    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = subprocess.Popen([sys.executable, "-m", "cutover", "mtls", "--strict", "--sandbox", "--yes",
                             "--watch", "5m", "--poll", "1s", "--report", str(tmp_path / "r.md")],
                            cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                            preexec_fn=default_sigint)
    seen = []
    deadline = time.monotonic() + 120
    for line in proc.stdout:
        seen.append(line)
        if "watch: " in line and " left" in line:
            proc.send_signal(getattr(signal, signame))
            break
        assert time.monotonic() < deadline, "".join(seen)
    rest, _ = proc.communicate(timeout=60)
    log = "".join(seen) + rest
    assert proc.returncode == 1, log[-3000:]
    assert "RESULT: interrupted (exit 1): interrupted during watch" in log
    assert "python -m cutover resume --env sandbox" in log and "python -m cutover rollback --env sandbox" in log
    worlds = set(re.findall(r"private files in (\S+);", log))
    assert worlds and not any(os.path.exists(w) for w in worlds), "the world's private keys are gone"
    for port in set(re.findall(r"127\.0\.0\.1:(\d+)", log)):
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", int(port))) != 0, f"port {port} still open"


def test_untrusted_cert_is_caught_by_the_passthrough_probes_exit_4(tmp_path):
    code, log, result = cutover(tmp_path, "mtls", "--strict", "--sandbox", "--yes", "--scenario", "untrusted-cert",
                                *FAST)
    assert code == 4, log[-3000:]
    wrong = {p["kind"] for p in result["probes"] if not p["ok"]}
    # The forged header is stripped by the ALB stand-in (as the ALB does), so it is the handshake
    # probe with the self-signed certificate that catches tasks which skip chain verification.
    assert wrong == {"untrusted-cert"}, wrong
    modes, status = after(log)
    assert modes == ["advisory", "advisory"] and status == 200


def test_a_blind_watch_is_proved_blind_and_rolled_back_exit_4(tmp_path):
    code, log, result = cutover(tmp_path, "mtls", "--strict", "--sandbox", "--yes", "--scenario", "blind-watch",
                                *FAST)
    assert code == 4, log[-3000:]
    assert "the watch is blind" in result["message"] and "access_log.caller_field" in result["message"]
    modes, _ = after(log)
    assert modes == ["advisory", "advisory"]


def test_a_slow_rollout_is_rolled_back_at_the_first_legitimate_403_not_after_it(tmp_path):
    code, log, result = cutover(tmp_path, "mtls", "--strict", "--sandbox", "--yes", "--scenario", "unenrolled-caller",
                                "--rollout-step", "3", "--watch", "20s", "--poll", "1s")
    assert code == 4, log[-3000:]
    steps = [(s["step"], s["status"]) for s in result["journal"]["steps"]]
    assert ("redeploy", "done") not in steps, "the rollback did not wait for the forward rollout"
    assert result["journal"]["first_strict_task"] is not None


def test_canary_unenrolled_caller_stops_the_deployment_exit_4(tmp_path):
    code, log, result = cutover(tmp_path, "mtls", "--strict", "--sandbox", "--yes", "--scenario", "unenrolled-caller",
                                "--strategy", "canary", *FAST)
    assert code == 4, log[-3000:]
    steps = [s["step"] for s in result["journal"]["steps"] if s["status"] == "done"]
    assert "stop-deployment" in steps or result["journal"]["restore"]["by"] == "restorer", steps
    modes, status = after(log)
    assert set(modes) == {"advisory"} and status == 200


def vanish(strategy: str, cwd) -> tuple[int, str]:
    """The operator-vanishes story: the CLI runs the tool in a process of its own and kills it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = subprocess.run([sys.executable, "-m", "cutover", "mtls", "--strict", "--sandbox", "--yes", "--scenario",
                           "operator-vanishes", "--strategy", strategy], cwd=cwd, env={**env, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    return proc.returncode, proc.stdout + proc.stderr


def test_operator_vanishes_canary_production_heals_with_nobody_at_the_keyboard(tmp_path):
    code, log = vanish("canary", tmp_path)
    assert code == 4, log[-3000:]
    assert "killed during the watch" in log and "restored by the restorer" in log
    modes, status = after(log)
    assert set(modes) == {"advisory"} and status == 200


def test_operator_vanishes_rolling_nobody_restores_and_it_says_so_exit_5(tmp_path):
    code, log = vanish("rolling", tmp_path)
    assert code == 5, log[-3000:]
    assert "RESULT: rollback_failed (exit 5): nobody restored production (a rolling deployment has no bake" in log
    modes, status = after(log)
    assert set(modes) == {"strict"} and status == 403, "the world really was left strict"
