"""The CLI contract: exit codes, and bad input refused before any AWS write."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import boto3
import pytest
from moto import mock_aws

from cutover.cli import main
from cutover.sandbox.provision import provision
from envconfig import ConfigError, load
from tests.conftest import ROOT
from tests.fakes import SERVICES, finished_journal, tasks_running


@pytest.fixture
def aws(config_dir, monkeypatch, tmp_path):
    """A provisioned moto account; every boto3 client the CLI builds lands here."""
    monkeypatch.chdir(tmp_path)  # reports/ goes here
    for k in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("BRAINSTORM_CUTOVER_SENTINEL_KEY", "key-of-the-sentinel")
    with mock_aws():
        cfg = load("production", config_dir)
        clients = {n: boto3.client(n, region_name=cfg.region) for n in SERVICES}
        provision(cfg, clients)
        tasks_running(cfg)
        clients["ssm"].put_parameter(Name=cfg.cutover.journal_of("staging"), Type="String",  # staging went first
                                     Value=finished_journal("staging", finished_at=time.time() - 3600))
        yield cfg, clients


def untouched(cfg, clients) -> bool:
    ssm = clients["ssm"]
    names = {p["Name"] for p in ssm.describe_parameters()["Parameters"]}
    return (ssm.get_parameter(Name=cfg.gateway.parameter_name)["Parameter"]["Version"] == 1
            and names == {cfg.gateway.parameter_name, cfg.cutover.journal_of("staging")})


def run(config_dir, *argv: str) -> int:
    return main([*argv, "--config-dir", str(config_dir)])


@pytest.mark.parametrize("argv", [
    ["mtls", "--strict", "--env", "prod"],                       # unknown environment
    ["mtls", "--strict", "--advisory"],                          # contradictory flags
    ["mtls"],                                                    # mode missing
    ["mtls", "--strict", "--watch", "soon", "--yes"],            # bad duration
    ["mtls", "--strict", "--bogus"],                             # unknown flag
    ["mtls", "--strict"],                                        # not a terminal and no --yes
    ["mtls", "--strict", "--yes"],                               # probe cert files missing
    ["launch"],                                                  # unknown command
])
def test_bad_usage_exits_2_with_no_aws_write(aws, config_dir, argv, capsys):
    cfg, clients = aws
    with pytest.raises(SystemExit) as exited:
        raise SystemExit(run(config_dir, *argv))
    assert exited.value.code == 2
    assert untouched(cfg, clients)
    err = capsys.readouterr().err
    assert err.strip(), "says why"


@pytest.mark.parametrize("old,new,key", [
    ("  cpu: 1024\n", "", "service.cpu: missing key"),
    ("  pool_size: 200", "  pool_sise: 200", "database.pool_sise: unknown key"),
    ("desired_count: 2", "desired_count: two", "service.desired_count: expected int"),
    ("meshWritesEnforcement: advisory", "meshWritesEnforcement: enforce",
     "meshWritesEnforcement: 'enforce' is not allowed"),
    ("  cpu: 1024\n", "  cpu: [1024\n", "YAML syntax error at line"),
])
def test_bad_config_is_one_line_naming_file_key_and_fix(aws, config_dir, capsys, old, new, key):
    cfg, clients = aws
    path = config_dir / "production.yaml"
    path.write_text(path.read_text().replace(old, new, 1))
    assert run(config_dir, "mtls", "--strict", "--yes") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and key in err and "fix:" in err
    assert untouched(cfg, clients)


def test_gate_command_prints_the_table_and_json(aws, config_dir, capsys):
    assert run(config_dir, "gate", "--json") == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["gate"]["green"] is True and result["gate"]["patterns"]["mtls-advisory"] == 0
    assert '| "mtls-advisory" | 0 |' in captured.err and "Gate: GREEN" in captured.err


def test_dry_run_through_the_cli(aws, config_dir, capsys):
    cfg, clients = aws
    assert run(config_dir, "mtls", "--strict", "--dry-run") == 0
    assert "plan: set tls.mtls.meshWritesEnforcement: advisory -> strict" in capsys.readouterr().out
    assert untouched(cfg, clients)


def test_status_reports_mode_and_drift(aws, config_dir, capsys):
    cfg, clients = aws
    doc = clients["ssm"].get_parameter(Name=cfg.gateway.parameter_name)["Parameter"]["Value"]
    clients["ssm"].put_parameter(Name=cfg.gateway.parameter_name, Overwrite=True, Type="String",
                                 Value=doc.replace("advisory", "strict"))
    assert run(config_dir, "status", "--json") == 0
    status = json.loads(capsys.readouterr().out)["status"]
    assert status["mode"] == "strict" and status["config_file_mode"] == "advisory" and status["drift"]


def test_help_teaches_and_does_not_import_moto_or_the_cdk():
    code = ("import sys, runpy\nsys.argv = ['cutover', '--help']\n"
            "try:\n    runpy.run_module('cutover', run_name='__main__')\nexcept SystemExit: pass\n"
            "heavy = [m for m in ('moto', 'aws_cdk', 'jsii', 'boto3', 'botocore') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out
    assert "exit codes:" in out and "rolled back" in out
    assert "python -m cutover mtls --strict --sandbox" in out


def test_missing_aws_profile_is_exit_2_with_a_fix(config_dir, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    assert run(config_dir, "status", "--profile", "no-such-profile") == 2
    err = capsys.readouterr().err
    assert "no-such-profile" in err and "fix:" in err


def test_a_config_file_that_cannot_be_written_is_a_warning_not_a_failure(tmp_path):
    import io

    from cutover.cli import _write_config
    from cutover.report import ConsoleUi

    out = io.StringIO()
    cfg = type("Cfg", (), {"source": str(tmp_path)})()  # a directory: cannot be read or written as a file
    assert _write_config(ConsoleUi(out), cfg, "strict", sandbox=False) is None
    assert "set gateway.document.tls.mtls.meshWritesEnforcement: strict there by hand" in out.getvalue()


def test_the_cli_makes_the_config_file_agree_with_production_keeping_every_other_byte(aws, config_dir, tmp_path,
                                                                                      capsys):
    cfg, clients = aws
    path = config_dir / "production.yaml"
    for name in ("probe-client.pem", "probe-client.key"):
        (tmp_path / name).write_text("x")
    path.write_text(path.read_text().replace("/etc/brainstorm/cutover/", f"{tmp_path}/"))
    before = path.read_text()
    doc = clients["ssm"].get_parameter(Name=cfg.gateway.parameter_name)["Parameter"]["Value"]
    clients["ssm"].put_parameter(Name=cfg.gateway.parameter_name, Overwrite=True, Type="String",
                                 Value=doc.replace("advisory", "strict"))  # strict by hand, never watched
    assert run(config_dir, "mtls", "--strict", "--yes") == 1
    out = capsys.readouterr().out
    assert "RESULT: unwatched (exit 1): strict is live (v2) but unwatched" in out
    assert path.read_text() == before.replace("meshWritesEnforcement: advisory", "meshWritesEnforcement: strict")


@pytest.mark.parametrize("argv, says", [
    (["--poll", "0s"], "--poll: 0s is below 1s: a busy loop"),
    (["--poll=-1s"], "'-1s' is not a duration"),
    (["--poll", "-1s"], "'-1s' is not a duration"),
    (["--watch", "-5m"], "'-5m' is not a duration"),
    (["--watch", "5m"], "--watch: 5m is below the runbook's 30m window"),
    (["--watch", "2h"], "exceeds cutover.lock_ttl 2h"),
    (["--scenario", "clean"], "--scenario only applies to the sandbox"),
])
def test_durations_that_make_no_sense_are_refused_the_same_way(aws, config_dir, capsys, argv, says):
    cfg, clients = aws
    with pytest.raises(SystemExit) as exited:
        raise SystemExit(run(config_dir, "mtls", "--strict", "--yes", *argv))
    assert exited.value.code == 2 and untouched(cfg, clients)
    assert says in capsys.readouterr().err


def test_a_short_watch_outside_the_sandbox_needs_the_explicit_flag(aws, config_dir, capsys):
    assert run(config_dir, "mtls", "--strict", "--dry-run", "--watch", "5m") == 2
    assert run(config_dir, "mtls", "--strict", "--dry-run", "--watch", "5m", "--short-watch") == 0
    assert "watch 5m" in capsys.readouterr().out


def test_the_same_rule_guards_the_config_file(config_dir):
    path = config_dir / "production.yaml"
    path.write_text(path.read_text().replace("  poll: 15s", "  poll: 0s"))
    with pytest.raises(ConfigError, match="cutover.poll: 0s is below 1s: a busy loop"):
        load("production", config_dir)


def test_every_command_ends_with_the_same_result_form(aws, config_dir, capsys):
    for argv in (["gate"], ["status"], ["rollback"], ["resume", "--yes"]):
        run(config_dir, *argv)
        lines = [x.strip() for x in capsys.readouterr().out.splitlines() if x.strip()]
        assert any(line.startswith("RESULT: ") and "(exit " in line for line in lines), (argv, lines[-3:])


def test_a_refused_input_also_ends_with_a_result_line_or_one_json_document(config_dir, capsys):
    """Scripts read stdout: a config or usage error says so there too, stderr keeps the one-line error."""
    path = config_dir / "production.yaml"
    path.write_text(path.read_text().replace("  poll: 15s", "  poll: 0s"))
    assert run(config_dir, "status") == 2
    out, err = capsys.readouterr()
    assert out.strip().splitlines()[-1].startswith("RESULT: config_error (exit 2): ")
    assert len(err.strip().splitlines()) == 1 and "cutover.poll" in err
    assert run(config_dir, "status", "--json") == 2
    doc = json.loads(capsys.readouterr().out)
    assert doc["exit_code"] == 2 and doc["outcome"] == "config_error" and "cutover.poll" in doc["message"]


def test_production_refuses_to_run_without_its_sentinel_unless_told(aws, config_dir, tmp_path, capsys, monkeypatch):
    path = config_dir / "production.yaml"
    for name in ("probe-client.pem", "probe-client.key"):
        (tmp_path / name).write_text("x")
    path.write_text(path.read_text().replace("/etc/brainstorm/cutover/", f"{tmp_path}/"))
    monkeypatch.delenv("BRAINSTORM_CUTOVER_SENTINEL_KEY")
    assert run(config_dir, "mtls", "--strict", "--yes") == 2
    err = capsys.readouterr().err
    assert "cutover.probes.sentinel: $BRAINSTORM_CUTOVER_SENTINEL_KEY holds no API key" in err and "--no-sentinel" in err
    cfg, clients = aws
    assert untouched(cfg, clients)


def test_a_placeholder_probe_url_is_refused_before_anything_changes(aws, config_dir, tmp_path, capsys):
    path = config_dir / "production.yaml"
    path.write_text(path.read_text().replace("base_url: https://api.production.brainstorm-router.example.com",
                                             "base_url: CHANGE-ME-gateway-https-url"))
    assert run(config_dir, "mtls", "--strict", "--yes") == 2
    assert "cutover.probes.base_url: still a CHANGE-ME placeholder" in capsys.readouterr().err
    cfg, clients = aws
    assert untouched(cfg, clients)


# ---------------------------------------------------------------- papercuts a newcomer found


def test_a_missing_config_dir_says_so(tmp_path, capsys):
    assert main(["status", "--config-dir", str(tmp_path / "nowhere")]) == 2
    assert "--config-dir: no such directory" in capsys.readouterr().err


def test_yaml_errors_point_at_the_line_that_opened_the_construct(config_dir, capsys):
    path = config_dir / "production.yaml"
    lines = path.read_text().splitlines(keepends=True)
    n = next(i for i, line in enumerate(lines) if line.startswith("region:"))
    lines[n] = "region: [us-east-1\n"
    path.write_text("".join(lines))
    assert run(config_dir, "status") == 2
    assert f"YAML syntax error at line {n + 1}, column 9" in capsys.readouterr().err


def test_type_errors_read_as_english(config_dir, capsys):
    path = config_dir / "production.yaml"
    path.write_text(path.read_text().replace("  desired_count: 2", "  desired_count: two"))
    assert run(config_dir, "status") == 2
    assert "expected integer, got a string ('two'); fix: write an integer value" in capsys.readouterr().err


def test_rollback_and_resume_with_nothing_to_do_exit_0(aws, config_dir, capsys):
    assert run(config_dir, "rollback") == 0
    assert run(config_dir, "resume", "--yes") == 0
    out = capsys.readouterr().out
    assert "RESULT: nothing_to_roll_back (exit 0)" in out and "RESULT: nothing_to_resume (exit 0)" in out


def test_status_and_gate_honour_report(aws, config_dir, tmp_path, capsys):
    assert run(config_dir, "status", "--report", str(tmp_path / "s.md")) == 0
    assert run(config_dir, "gate", "--report", str(tmp_path / "g.md")) == 0
    assert "# mTLS cutover" in (tmp_path / "s.md").read_text()
    assert "## Pre-cutover gate" in (tmp_path / "g.md").read_text()


def test_an_unwritable_report_path_is_refused_before_the_run(aws, config_dir, tmp_path, capsys):
    (tmp_path / "a-file").write_text("x")  # a report "inside" a file can never be written
    bad = str(tmp_path / "a-file" / "r.md")
    assert run(config_dir, "gate", "--report", bad) == 2
    assert f"--report {bad}" in capsys.readouterr().err


def test_read_only_commands_do_not_offer_acting_flags():
    import contextlib
    import io

    for command in ("gate", "probe", "status"):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf), pytest.raises(SystemExit):
            main([command, "--help"])
        text = buf.getvalue()
        assert "--yes" not in text and "--break-lock" not in text and "--scenario" not in text
        assert "exit codes:" in text, f"{command} --help lists its exit codes"


@pytest.mark.parametrize("sd, says", [
    ({"status": "SUCCESSFUL", "stage": None, "production_weight_new": 0.0, "test_weight_new": 0.0},
     "service deployment: SUCCESSFUL; the newest revision serves all traffic"),
    ({"status": "IN_PROGRESS", "stage": "BAKE_TIME", "production_weight_new": 10.0, "test_weight_new": 100.0},
     "service deployment: IN_PROGRESS BAKE_TIME; traffic on the newest revision: production 10%, test 100%"),
])
def test_status_never_says_a_finished_deployment_serves_nothing(sd, says):
    """A finished deployment's requested weights (0 % for one that never shifted) are not traffic."""
    from types import SimpleNamespace

    from cutover.cli import _render_status

    lines: list[str] = []
    ui = SimpleNamespace(info=lines.append, warn=lines.append)
    status = SimpleNamespace(mode="strict", parameter="/p", version=2, deployments=[], running=2, desired=2,
                             strategy="canary", service_deployment=sd, lock=None, run=None, next=[], notes=[])
    _render_status(ui, SimpleNamespace(status=status, message=""), "strict")
    assert says in lines
