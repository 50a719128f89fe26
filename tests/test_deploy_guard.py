"""The deploy guard (`make deploy ENV=...`): placeholders and drift from the live gateway document refuse a
deploy, one line per problem naming the file and the key. The live read goes through the boto3 chain,
here answered by moto."""

from __future__ import annotations

import os
import subprocess

import pytest

from cutover import deploy_guard
from cutover.cli import main as cutover_main
from envconfig import load
from tests.conftest import ROOT, shipped_copy

PARAM = "/brainstorm-router/production/gateway/config"
LIVE = """\
# the live gateway config
gateway:
  name: brainstorm-router
  providers: 7
  redis: true
tls:
  mtls:
    meshWritesEnforcement: advisory
    clientCertHeader: X-Amzn-Mtls-Clientcert
    meshWriteRoutes: [/v1/agent/delegate, /v1/agent/sub-agents, /v1/agent/trajectories, /v1/agent/task-runs]
"""
FILE = "config/production.yaml"  # as shown: relative to the working directory (tmp_path)


@pytest.fixture
def account(recorded_aws, tmp_path, config_dir):
    assert config_dir.parent == tmp_path
    ssm, calls = recorded_aws
    ssm.put_parameter(Name=PARAM, Value=LIVE, Type="String")
    return ssm, calls



@pytest.fixture
def config_dir(tmp_path):
    """config/ as shipped (every CHANGE-ME placeholder in place), callers acknowledged."""
    return shipped_copy(tmp_path)

def guard(config_dir, capsys) -> tuple[int, list[str], list[str]]:
    code = deploy_guard.main(["--env", "production", "--config-dir", str(config_dir)])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err.splitlines()


def make_ready(config_dir, capsys) -> None:
    """What an operator does: real values for the placeholders, then `config pull`."""
    path = config_dir / "production.yaml"
    text = path.read_text()
    for old, new in (("CHANGE-ME-container-image", "123456789012.dkr.ecr.us-east-1.amazonaws.com/router:r20"),
                     ("CHANGE-ME-acm-certificate-arn", "arn:aws:acm:us-east-1:123456789012:certificate/abc"),
                     ("CHANGE-ME-gateway-https-url", "https://api.brainstorm.example.org")):
        assert old in text
        text = text.replace(old, new)
    path.write_text(text)
    assert cutover_main(["config", "pull", "--env", "production", "--config-dir", str(config_dir), "--yes"]) == 0
    capsys.readouterr()
    assert load("production", config_dir).placeholders == ()


def test_the_shipped_config_is_refused_naming_every_placeholder_and_the_drift(account, config_dir, capsys):
    code, out, err = guard(config_dir, capsys)
    assert code == 1
    for key in ("service.image", "service.certificate_arn", "gateway.document.placeholder", "cutover.probes.base_url"):
        assert any(line.startswith(f"{FILE}: {key}: still a CHANGE-ME placeholder") and "fix: " in line
                   for line in err), (key, err)
    assert (f"{FILE}: gateway.document.gateway.redis: only in the live parameter: drift from the live parameter "
            f"{PARAM} (v1); a deploy would overwrite the live document; fix: adopt the live document with "
            ".venv/bin/python -m cutover config pull --env production (review the diff), or change the live one on "
            "purpose first") in err
    assert any(line.startswith(f"{FILE}: gateway.document.placeholder: only in config: drift") for line in err)
    assert not any("meshWritesEnforcement" in line for line in err), "the same mode is no problem"
    assert out[-1] == (f"RESULT: refused (exit 1): {len(err)} problem(s) in {FILE}: deploy of "
                       "BrainstormRouter-production refused")


def test_a_ready_config_passes_after_one_read(account, config_dir, capsys):
    _, calls = account
    make_ready(config_dir, capsys)
    calls.clear()
    code, out, err = guard(config_dir, capsys)
    assert (code, err) == (0, [])
    assert "deploy guard: credentials: arn:aws:sts::123456789012:user/moto (account 123456789012), region us-east-1" in out
    assert out[-1] == (f"RESULT: ok (exit 0): {FILE} has no placeholders and agrees with the live gateway document: "
                       "BrainstormRouter-production may deploy")
    assert calls == ["get_caller_identity", "get_parameter"], "reads only; no new IAM action"


def test_drift_names_each_key(account, config_dir, capsys):
    ssm, _ = account
    make_ready(config_dir, capsys)
    ssm.put_parameter(Name=PARAM, Overwrite=True, Type="String",
                      Value=LIVE.replace("providers: 7", "providers: 8").replace("  redis: true\n", "")
                      + "limits:\n  rps: 20\n")
    code, out, err = guard(config_dir, capsys)
    assert code == 1
    assert [line.split(": drift")[0] for line in err] == [
        f"{FILE}: gateway.document.gateway.providers: differs",
        f"{FILE}: gateway.document.gateway.redis: only in config",
        f"{FILE}: gateway.document.limits: only in the live parameter",
    ]
    assert all(f"drift from the live parameter {PARAM} (v2)" in line for line in err)


def test_a_different_live_mode_is_refused_on_its_own_line(account, config_dir, capsys):
    """Not drift (the cutover tool owns the flag), but a deploy would flip production's mode unwatched."""
    ssm, _ = account
    make_ready(config_dir, capsys)
    ssm.put_parameter(Name=PARAM, Overwrite=True, Type="String",
                      Value=LIVE.replace("meshWritesEnforcement: advisory", "meshWritesEnforcement: strict"))
    code, _, err = guard(config_dir, capsys)
    assert code == 1
    assert err == [f"{FILE}: gateway.document.tls.mtls.meshWritesEnforcement: live strict, config advisory: a deploy "
                   "would change the mTLS mode outside the cutover tool (no gate, probes, watch or rollback); fix: adopt "
                   "the live mode with .venv/bin/python -m cutover config pull --env production, or change the mode "
                   "with .venv/bin/python -m cutover mtls --env production"]


def test_a_parameter_that_does_not_exist_is_nothing_to_overwrite(account, config_dir, capsys):
    ssm, _ = account
    make_ready(config_dir, capsys)
    ssm.delete_parameter(Name=PARAM)
    code, out, err = guard(config_dir, capsys)
    assert (code, err) == (0, [])
    assert f"deploy guard: {PARAM} does not exist in this account and region: nothing to overwrite, the deploy " \
           "creates it from config" in out


def test_a_live_parameter_that_is_not_a_mapping_is_refused(account, config_dir, capsys):
    ssm, _ = account
    make_ready(config_dir, capsys)
    ssm.put_parameter(Name=PARAM, Overwrite=True, Type="String", Value="just text")
    code, _, err = guard(config_dir, capsys)
    assert code == 1 and len(err) == 1
    assert err[0].startswith(f"{FILE}: gateway.document: the live parameter {PARAM} (v2) is not a YAML mapping")


def test_credentials_of_another_account_are_refused(account, config_dir, capsys):
    make_ready(config_dir, capsys)
    path = config_dir / "production.yaml"
    path.write_text(path.read_text().replace("account: null ", 'account: "111122223333" ', 1))
    code, _, err = guard(config_dir, capsys)
    assert code == 1
    assert err == [f"{FILE}: account: the credentials are for account 123456789012, config says 111122223333; fix: use "
                   "the credentials of the account this config describes"]


def test_without_credentials_the_guard_refuses_and_still_names_the_placeholders(config_dir, capsys, monkeypatch,
                                                                                 tmp_path):
    monkeypatch.chdir(tmp_path)
    for k in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    code, out, err = guard(config_dir, capsys)
    assert code == 1, "placeholders alone refuse the deploy"
    assert len([line for line in err if "still a CHANGE-ME placeholder" in line]) == 4
    assert err[-1].startswith(f"{FILE}: gateway.document: not compared with the live parameter {PARAM}: AWS "
                              "credentials: Unable to locate credentials; fix: set AWS_PROFILE or pass --profile")
    assert out[-1].startswith("RESULT: refused (exit 1): 5 problem(s)")
    # With the placeholders gone, missing credentials alone are exit 2: the guard could not check.
    path = config_dir / "production.yaml"
    text = path.read_text()
    for marker in ("CHANGE-ME-container-image", "CHANGE-ME-acm-certificate-arn", "CHANGE-ME-gateway-https-url",
                   "CHANGE-ME-live-document-not-pulled"):
        text = text.replace(marker, "real")
    path.write_text(text)
    code, out, err = guard(config_dir, capsys)
    assert code == 2 and len(err) == 1 and out[-1].startswith("RESULT: refused (exit 2): 1 problem(s)")


def test_the_guard_reads_the_config_dir_app_py_reads(account, config_dir, capsys, monkeypatch):
    make_ready(config_dir, capsys)
    monkeypatch.setenv("BRAINSTORM_CONFIG_DIR", str(config_dir))
    assert deploy_guard.main(["--env", "production"]) == 0, "the copy made ready, not the repository's config/"
    capsys.readouterr()
    monkeypatch.delenv("BRAINSTORM_CONFIG_DIR")
    assert deploy_guard.main(["--env", "production"]) == 1, "the repository's config/ still holds placeholders"


def test_a_bad_config_is_exit_2(account, config_dir, capsys):
    assert deploy_guard.main(["--env", "prod", "--config-dir", str(config_dir)]) == 2
    assert "unknown environment 'prod'" in capsys.readouterr().err


# ---------------------------------------------------------------- make deploy / make import


@pytest.mark.parametrize("target, cdk", [("deploy", "npx cdk deploy BrainstormRouter-production"),
                                         ("import", "npx cdk import BrainstormRouter-production")])
def test_make_runs_the_guard_before_cdk(target, cdk):
    lines = subprocess.run(["make", "--no-print-directory", "-o", "setup", "-n", target, "ENV=production"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.splitlines()
    guard_line = lines.index(".venv/bin/python -m cutover.deploy_guard --env production")
    assert [x.strip() for x in lines[guard_line + 1:]] == [cdk], lines


def test_make_deploy_stops_at_the_guard(tmp_path):
    """For real, with no credentials: the guard refuses and make never reaches cdk."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "BRAINSTORM_CONFIG_DIR"}
    env.update(AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
               AWS_EC2_METADATA_DISABLED="true")
    proc = subprocess.run(["make", "--no-print-directory", "-o", "setup", "deploy", "ENV=production"], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode != 0
    assert "config/production.yaml: service.image: still a CHANGE-ME placeholder" in proc.stderr
    assert "npx cdk" not in proc.stdout + proc.stderr
    missing = subprocess.run(["make", "--no-print-directory", "deploy"], cwd=ROOT, capture_output=True, text=True)
    assert missing.returncode == 2 and "usage: make deploy|import ENV=<one of: production sandbox staging>" in \
        missing.stderr
