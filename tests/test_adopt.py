"""`python -m cutover config pull`: the live gateway document into config/<env>.yaml, faithfully.

Pure functions on text first, then the command through `cutover.cli.main` against moto."""

from __future__ import annotations

import io
import json

import pytest
import yaml

import envconfig
from cutover.adopt import (
    AdoptError,
    Drift,
    config_with_document,
    document_block,
    drift_keys,
    flag_bytes,
    flag_mismatch,
    same,
)
from cutover.cli import main
from tests.conftest import ROOT, shipped_copy

FLAG = ("gateway", "document", "tls", "mtls", "meshWritesEnforcement")
PARAM = "/brainstorm-router/production/gateway/config"

# What a live document may look like: its own comments, a quoted flag with a trailing comment, keys in
# another order than config's, a flow list, keys config does not have, a block scalar, unicode.
LIVE = """\
# brainstorm-router gateway config (edited in the console)
tls:
  mtls:
    clientCertHeader: X-Amzn-Mtls-Clientcert
    meshWritesEnforcement: "advisory"   # runbook: docs/runbooks/mtls-strict-cutover.md
    meshWriteRoutes: [/v1/agent/delegate, /v1/agent/sub-agents, /v1/agent/trajectories, /v1/agent/task-runs]
gateway:
  name: brainstorm-router
  providers: 7
  redis: true
database:
  poolSize: 50
  timeoutMs: 30000
banner: |
  Brainstorm router — strict soon

  (two paragraphs)
"""



@pytest.fixture
def config_dir(tmp_path):
    """config/ as shipped (every CHANGE-ME placeholder in place), callers acknowledged."""
    return shipped_copy(tmp_path)

def outside(text: str) -> str:
    """Every byte of a config file except the lines under gateway.document."""
    start, end, _ = document_block(text)
    return text[:start] + text[end:]


def shipped() -> str:
    return (ROOT / "config" / "production.yaml").read_text(encoding="utf-8")


# ---------------------------------------------------------------- pure: the text


def test_the_live_document_replaces_only_the_document_block_and_keeps_the_flags_bytes():
    old = shipped()
    new = config_with_document(old, LIVE)
    assert outside(new) == outside(old), "every byte outside gateway.document is intact"
    assert flag_bytes(new, FLAG) == flag_bytes(LIVE) == '"advisory"', "the flag's bytes are the live ones"
    after = yaml.safe_load(new)
    assert same(after["gateway"]["document"], yaml.safe_load(LIVE)), "same keys, values and order"
    assert list(after["gateway"]["document"]) == ["tls", "gateway", "database", "banner"]
    assert "# brainstorm-router gateway config (edited in the console)" in new, "the live comments come along"
    cfg = envconfig.parse(new, "production.yaml")
    assert "gateway.document.placeholder" not in cfg.placeholders and cfg.gateway.mode == "advisory"
    assert config_with_document(new, LIVE) == new, "a second pull changes nothing"


def test_a_live_text_that_cannot_be_shifted_is_rendered_with_the_flag_bytes_spliced_back():
    live = "%YAML 1.1\n---\ntls:\n  mtls:\n    meshWritesEnforcement: 'strict'\n    extra: [1, 2]\ngateway: {name: x}\n"
    old = shipped()
    new = config_with_document(old, live)
    assert "%YAML" not in new, "the verbatim splice would not parse: the document was re-rendered"
    assert outside(new) == outside(old)
    assert flag_bytes(new, FLAG) == "'strict'"
    assert same(yaml.safe_load(new)["gateway"]["document"], yaml.safe_load(live))
    assert envconfig.parse(new, "production.yaml").gateway.mode == "strict"


def test_comments_and_blank_lines_after_the_document_stay_outside_it():
    old = shipped().replace("\nobservability:\n", "\n  # a comment about what follows\n\nobservability:\n", 1)
    new = config_with_document(old, LIVE)
    assert "  # a comment about what follows\n\nobservability:\n" in new and outside(new) == outside(old)


@pytest.mark.parametrize("live, says", [
    ("tls: {mtls: {meshWritesEnforcement: strict}}\n", "cannot place the flag"),
    ("tls:\n  mtls:\n    meshWritesEnforcement: enforce\n", "'enforce', not one of advisory, strict"),
    ("- a\n- b\n", "not a YAML mapping"),
    ("tls: [\n", "not YAML"),
    ("gateway:\n  name: x\n", "cannot place the flag"),
])
def test_a_live_document_the_tool_cannot_handle_is_refused_with_the_reason(live, says):
    with pytest.raises(AdoptError, match=says.replace("(", r"\(").replace(")", r"\)")):
        config_with_document(shipped(), live)


def test_a_config_without_a_block_document_is_refused():
    text = shipped().replace("  document:\n", "  document: {}\n  unused:\n", 1)
    with pytest.raises(AdoptError, match="gateway.document: not a block mapping"):
        config_with_document(text, LIVE)


def test_drift_names_keys_and_ignores_only_the_flag():
    config = {"tls": {"mtls": {"meshWritesEnforcement": "advisory", "routes": ["/a", "/b"]}},
              "gateway": {"providers": 7, "name": "x"}, "placeholder": "CHANGE-ME"}
    live = {"gateway": {"name": "x", "providers": "7", "redis": True},
            "tls": {"mtls": {"meshWritesEnforcement": "strict", "routes": ["/a", "/c", "/d"]}}}
    assert drift_keys(live, config) == [
        Drift("gateway.document.gateway.providers", "differs"),      # '7' is not 7
        Drift("gateway.document.gateway.redis", "only in the live parameter"),
        Drift("gateway.document.tls.mtls.routes[1]", "differs"),
        Drift("gateway.document.tls.mtls.routes[2]", "only in the live parameter"),
        Drift("gateway.document.placeholder", "only in config"),
    ], "key order is not drift; the flag is not drift"
    assert flag_mismatch(live, config) == ("strict", "advisory")
    assert drift_keys(config, config) == [] and flag_mismatch(config, config) is None
    assert drift_keys({"a": True}, {"a": 1}) == [Drift("gateway.document.a", "differs")]


# ---------------------------------------------------------------- the command, through the CLI against moto


@pytest.fixture
def live(recorded_aws):
    """moto, credentials from the environment, and a record of every AWS call the tool makes."""
    return recorded_aws


def put(ssm, text: str) -> None:
    ssm.put_parameter(Name=PARAM, Value=text, Type="String", Overwrite=True)


def pull(config_dir, *argv: str) -> int:
    return main(["config", "pull", "--env", "production", "--config-dir", str(config_dir), *argv])


def written(config_dir) -> str:
    return (config_dir / "production.yaml").read_text(encoding="utf-8")


def result_line(text: str) -> str:
    (line,) = [x.strip() for x in text.splitlines() if x.strip().startswith("RESULT: ")]
    return line


def test_pull_writes_the_live_document_keeping_every_other_byte(live, config_dir, capsys):
    ssm, calls = live
    put(ssm, LIVE)
    before = written(config_dir)
    assert pull(config_dir, "--yes") == 0
    after = written(config_dir)
    assert outside(after) == outside(before), "every byte outside gateway.document is intact"
    assert flag_bytes(after, FLAG) == flag_bytes(ssm.get_parameter(Name=PARAM)["Parameter"]["Value"])
    assert same(yaml.safe_load(after)["gateway"]["document"], yaml.safe_load(LIVE))
    out = capsys.readouterr().out
    assert "--- " in out and '+        meshWritesEnforcement: "advisory"' in out
    assert "gateway.document.placeholder: only in config" in out
    assert result_line(out).startswith("RESULT: written (exit 0): wrote /brainstorm-router/production/gateway/config "
                                       "v1 into ")
    assert "placeholders left: service.image, service.certificate_arn, cutover.probes.base_url" in out
    assert set(calls) == {"get_parameter"}, "one read: ssm:GetParameter, nothing else"
    assert ssm.get_parameter(Name=PARAM)["Parameter"]["Version"] == 1, "AWS is never written"

    assert pull(config_dir, "--yes") == 0, "nothing to do is exit 0"
    assert result_line(capsys.readouterr().out).startswith("RESULT: unchanged (exit 0)")
    assert written(config_dir) == after


def test_dry_run_shows_the_unified_diff_and_writes_nothing(live, config_dir, capsys, tmp_path):
    ssm, _ = live
    put(ssm, LIVE)
    before = written(config_dir)
    assert pull(config_dir, "--dry-run") == 0
    out = capsys.readouterr().out
    diff = [line[9:] for line in out.splitlines() if line.startswith("         ")]
    assert config_dir.parent == tmp_path, "the working directory: the diff names the file as git would"
    assert "--- a/config/production.yaml" in diff and "+++ b/config/production.yaml" in diff
    assert "-    placeholder: CHANGE-ME-live-document-not-pulled" in diff
    assert "+    database:" in diff and any(line.startswith("@@ ") for line in diff)
    assert result_line(out).startswith("RESULT: dry_run (exit 0)")
    assert written(config_dir) == before


def test_json_carries_the_diff_and_the_drift(live, config_dir, capsys):
    ssm, _ = live
    put(ssm, LIVE.replace('"advisory"', "strict"))
    assert pull(config_dir, "--dry-run", "--json") == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert data["exit_code"] == 0 and data["outcome"] == "dry_run" and data["changed"] is True
    assert (data["live_mode"], data["config_mode"], data["version"]) == ("strict", "advisory", 1)
    assert {"key": "gateway.document.database", "what": "only in the live parameter"} in data["drift"]
    assert "+        meshWritesEnforcement: strict" in data["diff"]
    assert "RESULT: dry_run (exit 0)" in captured.err, "human output goes to stderr with --json"


def test_the_live_mode_is_adopted_byte_for_byte_even_when_it_differs(live, config_dir):
    ssm, _ = live
    put(ssm, LIVE.replace('"advisory"', "'strict'"))
    assert pull(config_dir, "--yes") == 0
    assert flag_bytes(written(config_dir), FLAG) == "'strict'"
    assert envconfig.load("production", config_dir).gateway.mode == "strict"


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("answer, code, state", [("no\n", 1, "not_confirmed"), ("", 1, "not_confirmed"),
                                                 ("yes\n", 0, "written")])
def test_on_a_terminal_it_asks_before_writing(live, config_dir, capsys, monkeypatch, answer, code, state):
    ssm, _ = live
    put(ssm, LIVE)
    monkeypatch.setattr("sys.stdin", Tty(answer))
    before = written(config_dir)
    assert pull(config_dir) == code
    out = capsys.readouterr().out
    assert "[yes/no]" in out and result_line(out).startswith(f"RESULT: {state} (exit {code})")
    assert (written(config_dir) == before) == (code != 0)


def test_without_a_terminal_it_needs_yes_and_reads_nothing_before(live, config_dir, capsys):
    _, calls = live  # no parameter at all: a read would be exit 1, the refusal comes first
    before = written(config_dir)
    assert pull(config_dir) == 2
    assert "pass --yes to write (or --dry-run to see the diff)" in capsys.readouterr().err
    assert calls == [] and written(config_dir) == before


@pytest.mark.parametrize("argv, says", [
    (["--sandbox", "--yes"], "fix: drop --sandbox"),
    (["--env", "prod", "--yes"], "unknown environment 'prod'"),
])
def test_bad_usage_is_exit_2(live, config_dir, capsys, argv, says):
    assert main(["config", "pull", "--config-dir", str(config_dir), *argv]) == 2
    assert says in capsys.readouterr().err


def test_a_broken_config_is_exit_2_and_left_alone(live, config_dir, capsys):
    ssm, _ = live
    put(ssm, LIVE)
    path = config_dir / "production.yaml"
    path.write_text(written(config_dir).replace("  pool_size: 200", "  pool_sise: 200"))
    before = written(config_dir)
    assert pull(config_dir, "--yes") == 2
    assert "database.pool_sise: unknown key" in capsys.readouterr().err and written(config_dir) == before


def test_a_missing_parameter_is_exit_1_with_nothing_written(live, config_dir, capsys):
    before = written(config_dir)
    assert pull(config_dir, "--yes") == 1
    line = result_line(capsys.readouterr().out)
    assert line.startswith(f"RESULT: not_found (exit 1): {PARAM} does not exist in us-east-1") and "unchanged" in line
    assert written(config_dir) == before


def test_a_live_document_the_tool_cannot_place_is_exit_1_with_nothing_written(live, config_dir, capsys):
    ssm, _ = live
    put(ssm, "tls: {mtls: {meshWritesEnforcement: advisory}}\n")
    before = written(config_dir)
    assert pull(config_dir, "--yes") == 1
    line = result_line(capsys.readouterr().out)
    assert line.startswith(f"RESULT: cannot_adopt (exit 1): {PARAM} v1 cannot be adopted: the cutover tool cannot "
                           "place the flag")
    assert written(config_dir) == before


def test_help_lists_config_pull_and_its_exit_codes(capsys):
    with pytest.raises(SystemExit):
        main(["config", "pull", "--help"])
    out = capsys.readouterr().out
    assert "--dry-run" in out and "--yes" in out and "exit codes:" in out and "ssm:GetParameter only" in out
