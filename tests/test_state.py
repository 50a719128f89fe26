"""State you can trust: foreign writes, the exact lock, the journal read first, shortened watches
and interruptions. Each test asserts the final parameter, service, lock and journal (moto, fake clock)."""

from __future__ import annotations

import dataclasses
import json

import pytest
from botocore.exceptions import ConnectionClosedError
from moto import mock_aws

from cutover.engine import Options, Terminated
from cutover.report import markdown
from envconfig import load
from tests.conftest import use_strategy
from tests.fakes import Crash, ScriptedEcs, make_world

YES = Options(target="strict", yes=True)


def v1(world) -> str:
    return world.clients["ssm"].get_parameter(Name=f"{world.cfg.gateway.parameter_name}:1")["Parameter"]["Value"]


def someone_writes(world, old: str, new: str) -> None:
    value = world.param()["Value"]
    assert old in value
    world.clients["ssm"].put_parameter(Name=world.cfg.gateway.parameter_name, Value=value.replace(old, new),
                                       Type="String", Overwrite=True)


# ---------------------------------------------------------------- someone else's write


def test_a_write_between_preflight_and_flip_stops_with_nothing_changed(world):
    engine, _ = world.cutover()
    real = engine.journal.save
    state = {"done": False}

    def save(journal) -> None:  # a `cdk deploy` lands right after the plan, before our write
        real(journal)
        if not state["done"]:
            state["done"] = True
            someone_writes(world, "providers: 7", "providers: 8")
    engine.journal.save = save
    outcome = engine.run(YES)
    assert outcome.code == 1 and outcome.state == "changed_under_us"
    assert "v1 at preflight, v2 now" in outcome.message and "nothing changed" in outcome.message
    assert world.param()["Version"] == 2 and "providers: 8" in world.param()["Value"], "their write stands"
    assert world.mode() == "advisory" and world.rollouts == 0 and world.lock() is None
    assert world.journal()["state"] == "stopped"


def test_a_foreign_edit_during_the_watch_survives_the_rollback_only_the_flag_goes_back(world):
    t0 = world.clock.now
    world.at(t0 + 120, lambda: someone_writes(world, "providers: 7", "providers: 9"))  # v3, another key
    world.at(t0 + 300, lambda: world.log(at=t0 + 300, status=403, caller="brainstorm-cli"))
    engine, out = world.cutover()
    outcome = engine.run(YES)
    assert outcome.code == 4, outcome.message
    value = world.param()["Value"]
    assert world.param()["Version"] == 4 and "providers: 9" in value, "every byte of their edit is kept"
    assert value == v1(world).replace("providers: 7", "providers: 9"), "and only the flag went back"
    assert world.lock() is None and world.journal()["state"] == "rolled_back"
    j = world.journal()
    assert j["restore"]["rule"] == "flag_only" and j["restore"]["foreign_version"] == 3
    assert "someone else wrote v3" in out.getvalue()
    assert "v3 was written by someone else" in outcome.message
    assert "v3 was someone else's: only the flag went back" in markdown(outcome)


def test_someone_putting_advisory_back_during_the_watch_is_not_reported_as_done(world):
    """Rolling: only the logs were watched, so a foreign advisory write ended 'done: strict is live'."""
    t0 = world.clock.now
    world.at(t0 + 600, lambda: someone_writes(world, "meshWritesEnforcement: strict",
                                              "meshWritesEnforcement: advisory"))  # v3
    engine, out = world.cutover()
    outcome = engine.run(YES)
    assert outcome.code == 4 and "someone else changed the gateway parameter during the run: v3 is advisory" \
        in outcome.message, outcome.message
    j = world.journal()
    assert j["state"] == "rolled_back" and j["restore"]["rule"] == "nothing", "their advisory is not overwritten"
    assert world.param()["Version"] == 3 and world.mode() == "advisory"
    assert world.deployed_mode == "advisory", "the rollback redeployed, so no task is left strict"
    assert world.lock() is None


def test_a_foreign_edit_that_keeps_strict_is_said_once_and_the_watch_goes_on(world):
    t0 = world.clock.now
    world.at(t0 + 600, lambda: someone_writes(world, "providers: 7", "providers: 9"))  # v3, still strict
    engine, out = world.cutover()
    outcome = engine.run(YES)
    assert outcome.code == 0, outcome.message
    assert out.getvalue().count("v3 of the gateway parameter was written by someone else") == 1
    assert world.param()["Version"] == 3 and world.journal()["state"] == "done"


def test_when_the_restorer_takes_the_run_over_the_tool_verifies_and_records_it(world):
    world.at(world.clock.now + 600, lambda: restorer_acts(world))
    engine, out = world.cutover()
    outcome = engine.run(YES)
    assert outcome.code == 4 and "by the restorer (server side), verified by probes" in outcome.message, outcome.message
    assert "the restorer's rollback verified" in out.getvalue()
    assert world.mode() == "advisory" and world.lock() is None
    status = world.cutover()[0].status().message
    assert "restored by the restorer" in status and "not verified by probes" not in status, status


def restorer_acts(world) -> None:
    """The restorer Lambda as EventBridge would invoke it on this service's failed deployment."""
    from restorer import handler as restorer
    from tests.test_restorer import event

    c, ecs = world.cfg, world.clients["ecs"]
    arn = ecs.describe_services(cluster=c.service.cluster_name, services=[c.service.service_name])["services"][0][
        "serviceArn"]
    settings = restorer.Settings(c.gateway.parameter_name, c.journal_parameter, c.lock_parameter, arn,
                                 c.service.cluster_name, c.service.service_name)
    restorer.restore(event(arn), settings, {"ssm": world.clients["ssm"], "ecs": ScriptedEcs(ecs, world)},
                     now=lambda: world.clock.now)


def test_a_late_verification_never_writes_over_a_newer_runs_journal(world):
    world.at(world.clock.now + 600, lambda: restorer_acts(world))
    engine_a, _ = world.cutover()
    real = engine_a._record_verified
    newer = {}

    def late(j, detail):  # while A verifies, operator B runs a whole new cutover
        world.clock.now += 5
        b, _ = world.cutover()
        assert b.run(YES).code == 0
        newer.update(world.journal())
        real(j, detail)
    engine_a._record_verified = late
    assert engine_a.run(YES).code == 4
    assert world.journal() == newer, "B's journal stands as B left it"
    assert world.lock() is None


def test_someone_writing_strict_during_the_rollback_is_not_reported_as_rolled_back(world):
    t0 = world.clock.now
    world.at(t0 + 300, lambda: world.log(at=t0 + 300, status=403, caller="brainstorm-cli"))
    engine, _ = world.cutover()
    real = engine._rollback_redeploy

    def redeploy(j, o):  # a `cdk deploy` puts strict back while the rollback redeploys
        world.scripts.append(["IN_PROGRESS", "IN_PROGRESS", "COMPLETED"])
        world.at(world.clock.now + 0.5, lambda: someone_writes(world, "meshWritesEnforcement: advisory",
                                                                 "meshWritesEnforcement: strict"))
        return real(j, o)
    engine._rollback_redeploy = redeploy
    outcome = engine.run(YES)
    assert outcome.code == 5 and "written by someone else during the rollback, is strict" in outcome.message
    assert world.journal()["state"] == "rollback_failed" and world.lock() is not None, "the lock stays held"


def test_a_flap_between_two_polls_is_seen_in_the_parameters_history(world):
    def flap():
        someone_writes(world, "meshWritesEnforcement: strict", "meshWritesEnforcement: advisory")  # v3
        world.deployed_mode = "advisory"  # a replacement task starts now and reads advisory
        someone_writes(world, "meshWritesEnforcement: advisory", "meshWritesEnforcement: strict")  # v4
    world.at(world.clock.now + 900, flap)
    engine, _ = world.cutover()
    outcome = engine.run(YES)
    assert outcome.code == 4 and "wrote v3 (advisory) and then v4 (strict)" in outcome.message, outcome.message
    assert world.deployed_mode == "advisory" and world.lock() is None


def test_an_unfinished_way_back_to_advisory_points_to_resume(world):
    engine, _ = world.cutover()
    assert engine.run(YES).code == 0
    world.clock.now += 60
    engine, _ = world.cutover()

    def die(j, o):
        raise Crash()
    engine._redeploy = die
    with pytest.raises(Crash):
        engine.run(Options(target="advisory", yes=True))
    refused = world.cutover()[0].rollback(Options())
    assert refused.code == 1 and refused.next_commands == ["python -m cutover resume --env production"]
    assert world.cutover()[0].resume(Options(yes=True)).code == 0
    assert world.deployed_mode == "advisory"


def test_a_passing_failure_to_read_the_parameter_is_not_a_page(world):
    from tests.fakes import client_error

    t0, name = world.clock.now, world.cfg.gateway.parameter_name
    failures = []

    def denied(kw):  # two reads in a row fail, fifteen minutes into the watch
        if kw["Name"] == name and world.clock.now >= t0 + 900 and len(failures) < 2:
            failures.append(world.clock.now)
            return client_error("AccessDeniedException", "GetParameter")
        return None
    engine, out = world.cutover(faults={"ssm": {"get_parameter": [denied] * 100_000}})
    outcome = engine.run(YES)
    assert outcome.code == 0, outcome.message
    assert len(failures) == 2
    assert out.getvalue().count("could not read the gateway parameter (ClientError); trying again next poll") == 2


def test_a_lasting_failure_to_read_the_parameter_is_not_tolerated(world):
    from tests.fakes import client_error

    t0, name = world.clock.now, world.cfg.gateway.parameter_name

    def denied(kw):
        return client_error("AccessDeniedException", "GetParameter") \
            if kw["Name"] == name and world.clock.now >= t0 + 900 else None
    engine, out = world.cutover(faults={"ssm": {"get_parameter": [denied] * 100_000}})
    outcome = engine.run(YES)
    assert outcome.code == 5 and world.journal()["state"] == "rollback_failed", "said plainly, lock kept"
    assert out.getvalue().count("trying again next poll") == 2, "the third failure in a row ends the watch"


def test_rollback_of_an_older_finished_run_follows_the_same_rule(world):
    engine, _ = world.cutover()
    assert engine.run(YES).code == 0
    someone_writes(world, "providers: 7", "providers: 6")
    fresh, _ = world.cutover()
    outcome = fresh.rollback(Options())
    assert outcome.code == 4
    assert world.param()["Value"] == v1(world).replace("providers: 7", "providers: 6")
    assert world.deployed_mode == "advisory" and world.lock() is None


def test_rollback_of_our_own_version_restores_the_exact_bytes(world):
    world.clients["ssm"].put_parameter(Name=world.cfg.gateway.parameter_name, Type="String", Overwrite=True,
                                       Value=v1(world).replace("advisory", "'advisory'  # quoted by hand"))
    engine, _ = world.cutover()
    assert engine.run(YES).code == 0
    before = world.clients["ssm"].get_parameter(Name=f"{world.cfg.gateway.parameter_name}:2")["Parameter"]["Value"]
    assert "'strict'  # quoted by hand" in world.param()["Value"]
    assert engine.rollback(Options()).code == 4
    assert world.param()["Value"] == before


# ---------------------------------------------------------------- the lock is exact


def test_a_lost_create_reply_is_still_our_lock(world):
    lock_name = world.cfg.lock_parameter

    def reply_lost(kwargs):
        if kwargs["Name"] == lock_name and kwargs.get("Overwrite") is False:
            world.clients["ssm"].put_parameter(**kwargs)  # AWS applied it...
            return ConnectionClosedError(endpoint_url="https://ssm.us-east-1.amazonaws.com")  # ...the reply is lost
        return None
    engine, _ = world.cutover(faults={"ssm": {"put_parameter": [reply_lost]}})
    outcome = engine.run(YES)
    assert outcome.code == 0, outcome.message
    assert world.lock() is None and world.mode() == "strict"


def test_a_superseded_process_never_deletes_its_adopters_lock_and_never_acts(world):
    world.scripts = [["IN_PROGRESS"] * 4 + ["FAILED"], ["COMPLETED"]]
    seen = {}

    def adopt_elsewhere() -> None:  # another machine's `resume` takes the run over mid-redeploy
        other, _ = world.cutover()
        seen["token"] = other.lock.adopt(run_id=world.journal()["run_id"], operator="arn:other")
    world.at(world.clock.now + 20, adopt_elsewhere)
    engine, _ = world.cutover()
    outcome = engine.run(YES)
    # The deployment FAILED after the takeover: the superseded process must not roll back.
    assert outcome.state == "taken_over" and outcome.code == 1
    assert world.mode() == "strict" and world.rollouts == 1, "it did not restore or redeploy"
    assert world.lock()["token"] == seen["token"], "the adopter's lock is intact"
    assert not engine.lock.release(), "release by an old token deletes nothing"
    assert world.lock()["token"] == seen["token"]


def test_the_lock_is_renewed_while_the_run_lives(config_dir):
    use_strategy(config_dir, "rolling")
    with mock_aws():
        cfg = load("production", config_dir)
        short = dataclasses.replace(cfg, cutover=dataclasses.replace(cfg.cutover, lock_ttl=600.0))
        world = make_world(short)
        seen = []

        def intruder() -> None:  # 25 minutes in: far past a 10-minute TTL had nobody renewed it
            other, _ = world.cutover()
            seen.append(other.run(Options(target="advisory", yes=True, break_lock=True)))
        world.at(world.clock.now + 25 * 60, intruder)
        engine, _ = world.cutover()
        outcome = engine.run(YES)
        assert outcome.code == 0 and world.mode() == "strict"
        assert seen[0].state == "unfinished_run", "the live run's lock and journal stood"
        writes = [v for (name, v) in world.ssm_written if name == cfg.lock_parameter]
        assert len(writes) >= 12, "renewed every quarter TTL (2.5 minutes) through a 30-minute watch"


# ---------------------------------------------------------------- the journal is read first


def test_mtls_refuses_an_unfinished_run_even_with_break_lock(world):
    def interrupt() -> None:
        raise KeyboardInterrupt
    world.at(world.clock.now + 120, interrupt)
    engine, _ = world.cutover()
    assert engine.run(YES).state == "interrupted"
    world.clock.now += 3 * 3600  # the lock expired long ago
    fresh, _ = world.cutover()
    refused = fresh.run(Options(target="strict", yes=True, break_lock=True))
    assert refused.code == 1 and refused.state == "unfinished_run"
    assert "resume --env production" in refused.next_commands[0] and "rollback" in refused.next_commands[1]
    assert world.param()["Version"] == 2 and world.rollouts == 1, "nothing more was done"


def test_already_strict_is_nothing_to_do_only_after_a_finished_watch(world):
    someone_writes(world, "meshWritesEnforcement: advisory", "meshWritesEnforcement: strict")
    engine, _ = world.cutover()
    outcome = engine.run(YES)
    assert outcome.code == 1 and outcome.state == "unwatched" and "no run of this tool watched it" in outcome.message
    assert world.param()["Version"] == 2 and world.lock() is None


# ---------------------------------------------------------------- guard alarms that do not exist


def test_a_missing_guard_alarm_makes_the_gate_red_and_names_it(world):
    world.clients["cloudwatch"].delete_alarms(AlarmNames=[world.cfg.observability.alarm_unhealthy])
    engine, _ = world.cutover()
    outcome = engine.run(YES)
    assert outcome.code == 3
    assert f"guard alarm(s) missing: {world.cfg.observability.alarm_unhealthy}" in outcome.message
    assert world.param()["Version"] == 1 and world.lock() is None


# ---------------------------------------------------------------- a shortened watch, prompts, SIGTERM


def interrupt_at(world, when: float) -> None:
    def interrupt() -> None:
        raise KeyboardInterrupt
    world.at(when, interrupt)


def test_keep_strict_records_a_watch_cut_short_and_resume_watches_the_rest(world):
    interrupt_at(world, world.clock.now + 5 * 60)
    engine, _ = world.cutover(interactive=True, answers="k\n")
    outcome = engine.run(YES)
    assert outcome.code == 0 and outcome.state == "watch_cut_short"
    assert "watch cut short after 5m" in outcome.message and "of 30m" in outcome.message
    assert world.journal()["state"] == "watch_cut_short" and world.lock() is None
    assert any("watch cut short after" in s["detail"] for s in world.journal()["steps"])
    assert "cut short" in markdown(outcome)
    fresh, _ = world.cutover()
    assert "watch cut short after 5m" in fresh.status().message
    again = fresh.run(YES)
    assert again.state == "unwatched" and "cut short" in again.message and "resume" in again.next_commands[0]
    fresh, _ = world.cutover()
    resumed = fresh.resume(Options(yes=True))
    assert resumed.code == 0 and resumed.state == "done" and world.journal()["state"] == "done"


def test_while_the_prompt_waits_the_watch_still_rolls_back(world):
    t = world.clock.now + 5 * 60
    interrupt_at(world, t)
    world.at(t + 20, lambda: world.log(at=t + 20, status=403, caller="brainstorm-cli"))
    engine, _ = world.cutover(interactive=True, answers="")  # nobody answers
    outcome = engine.run(YES)
    assert outcome.code == 4 and "'brainstorm-cli' got 403" in outcome.message
    assert world.mode() == "advisory" and world.lock() is None


def test_an_unanswered_prompt_goes_on_watching(world):
    interrupt_at(world, world.clock.now + 5 * 60)
    engine, out = world.cutover(interactive=True, answers="")
    outcome = engine.run(YES)
    assert outcome.code == 0 and outcome.state == "done" and "no answer within 1m: continuing" in out.getvalue()


def test_sigterm_is_ctrl_c_without_a_terminal(world):
    def terminate() -> None:
        raise Terminated
    world.at(world.clock.now + 5 * 60, terminate)
    engine, out = world.cutover(interactive=True, answers="r\n")  # a terminal, but SIGTERM asks nothing
    outcome = engine.run(YES)
    assert outcome.state == "interrupted" and "interrupted:" not in out.getvalue()
    assert world.lock()["run_id"] == outcome.run_id and world.journal()["state"] == "interrupted"
    assert world.mode() == "strict"


# ---------------------------------------------------------------- exit 5: the printed commands restore exact bytes


def test_the_printed_manual_commands_restore_the_exact_bytes(tmp_path, config_dir):
    """Runs the AWS CLI commands the tool prints at exit 5, for real, against moto's server."""
    import io
    import os
    import shlex
    import subprocess
    import sys
    from pathlib import Path

    import boto3
    from moto.server import ThreadedMotoServer

    from cutover.factory import build
    from cutover.report import ConsoleUi
    from cutover_core.journal import Journal

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
               "AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x",
               "AWS_DEFAULT_REGION": "us-east-1"}
        cfg = load("production", config_dir)
        ssm = boto3.client("ssm", region_name="us-east-1", endpoint_url=env["AWS_ENDPOINT_URL"],
                           aws_access_key_id="x", aws_secret_access_key="x")
        name = cfg.gateway.parameter_name
        # No trailing newline, quotes, a dollar sign, a backslash and non-ASCII: every byte matters.
        previous = "tls:\n  mtls:\n    meshWritesEnforcement: 'advisory'  # \"$HOME\" \\ né\n  x: `y`"
        ssm.put_parameter(Name=name, Value=previous, Type="String", Tier="Advanced")
        ssm.put_parameter(Name=name, Value=previous.replace("advisory", "strict"), Type="String", Overwrite=True)
        j = Journal(run_id="r", env="production", operator="arn:x", target="strict", previous_mode="advisory",
                    parameter=name, started=0.0, previous_version=1, new_version=2, parameter_type="String",
                    parameter_tier="Advanced")
        engine = build(cfg, ui=ConsoleUi(io.StringIO()), aws=object())  # no AWS call: the commands come from data
        commands = engine.manual_rollback_commands(j)
        assert commands[0].startswith("aws ssm get-parameter") and commands[1].startswith("aws ssm put-parameter")
        aws_bin = str(Path(sys.executable).with_name("aws"))
        for line in commands[:2]:
            cmd = line.replace("aws ", f"{shlex.quote(aws_bin)} ", 1)
            proc = subprocess.run(cmd, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
            assert proc.returncode == 0, proc.stderr
        p = ssm.get_parameter(Name=name)["Parameter"]
        assert p["Value"] == previous and p["Version"] == 3 and p["Type"] == "String"
        tiers = {v["Version"]: v.get("Tier") for v in ssm.get_parameter_history(Name=name)["Parameters"]}
        assert tiers[3] == "Advanced"
    finally:
        server.stop()


# ---------------------------------------------------------------- staged promotion


@pytest.mark.parametrize("staging, says", [
    (None, "no cutover of staging on record"),
    ({"finished_ago": 8 * 86400}, "finished 192h ago, longer than 168h"),
    ({"state": "rolled_back"}, "is rolled_back, not a finished, watched strict cutover"),
    ({"state": "watch_cut_short"}, "is watch_cut_short, not a finished, watched strict cutover"),
])
def test_production_waits_for_a_recent_finished_staging_cutover(config_dir, staging, says):
    from tests.fakes import promoted_from

    use_strategy(config_dir, "rolling")
    with mock_aws():
        world = make_world(load("production", config_dir), promoted=False)
        if staging is not None:
            promoted_from(world, "staging", **staging)
        engine, _ = world.cutover()
        outcome = engine.run(YES)
        assert outcome.code == 3 and says in outcome.message and "--skip-staging" in outcome.message
        assert world.param()["Version"] == 1 and world.lock() is None
        engine, _ = world.cutover()
        skipped = engine.run(Options(target="strict", yes=True, skip_staging="staging is down for the DB migration"))
        assert skipped.code == 0, skipped.message
        assert world.journal()["skip_staging"] == "staging is down for the DB migration"
        assert "Staged promotion skipped:** staging is down for the DB migration" in markdown(skipped)


# ---------------------------------------------------------------- found by an SRE's attack


@pytest.mark.parametrize("agent, run_id", [("brainstorm-cutover-probe-harness/2.1", ""),
                                           ("brainstorm-cli/0.9", "made-up-run"),
                                           ("brainstorm-cutover-probe/other-run", "")])
def test_a_caller_with_one_of_the_probes_marks_is_still_a_caller(world, agent, run_id):
    t = world.clock.now + 5 * 60
    world.at(t, lambda: world.log(at=t, status=403, caller="brainstorm-cli", user_agent=agent, run_id=run_id))
    engine, _ = world.cutover()
    outcome = engine.run(YES)
    assert outcome.code == 4 and "'brainstorm-cli' got 403" in outcome.message


def test_a_bypass_line_that_mentions_the_probe_still_counts_in_the_gate(world):
    world.log(at=world.clock.now - 600, text="WARN [mtls-advisory] mesh write without client certificate: "
                                             "caller=x ua=brainstorm-cutover-probe-harness/2.1")
    engine, _ = world.cutover()
    outcome = engine.run(YES)
    assert outcome.code == 3 and "mtls-advisory" in outcome.message


def test_the_way_back_to_advisory_never_rolls_back_to_strict(world):
    engine, _ = world.cutover()
    assert engine.run(YES).code == 0
    world.scripts = [["FAILED"]]
    engine, _ = world.cutover()
    outcome = engine.run(Options(target="advisory", yes=True))
    assert outcome.code == 1 and outcome.state == "advisory_incomplete" and "NOT rolled back" in outcome.message
    assert world.mode() == "advisory" and world.lock() is None and world.journal()["state"] == "stopped"
    assert any("--force-new-deployment" in c for c in outcome.next_commands)


def test_rollback_of_a_finished_way_back_to_advisory_refuses_to_put_strict_back(world):
    engine, _ = world.cutover()
    assert engine.run(YES).code == 0
    engine, _ = world.cutover()
    assert engine.run(Options(target="advisory", yes=True)).code == 0
    version = world.clients["ssm"].get_parameter(Name=world.cfg.gateway.parameter_name)["Parameter"]["Version"]
    fresh, _ = world.cutover()
    outcome = fresh.rollback(Options())
    assert outcome.code == 1 and outcome.state == "refused" and "no gate" in outcome.message
    assert outcome.next_commands == ["python -m cutover mtls --strict --env production"]
    assert world.mode() == "advisory" and world.deployed_mode == "advisory" and world.lock() is None
    assert world.clients["ssm"].get_parameter(Name=world.cfg.gateway.parameter_name)["Parameter"]["Version"] == version


def test_rollback_of_a_restored_run_verifies_before_saying_nothing_to_do(world):
    engine, _ = world.cutover()
    assert engine.run(YES).code == 0
    # The restorer put the parameter back and marked the run rolled back; its redeploy then failed:
    # the tasks still run strict.
    ssm, name = world.clients["ssm"], world.cfg.gateway.parameter_name
    ssm.put_parameter(Name=name, Value=v1(world), Type="String", Overwrite=True)
    j = world.journal()
    j.update(state="rolled_back", restore={"rule": "exact", "by": "restorer", "at": world.clock.now,
                                           "from_version": 2, "to_version": 3})
    ssm.put_parameter(Name=world.cfg.journal_parameter, Value=json.dumps(j), Type="String", Overwrite=True)
    assert world.deployed_mode == "strict"
    fresh, _ = world.cutover()
    assert "not verified by probes" in fresh.status().message
    fresh, _ = world.cutover()
    outcome = fresh.rollback(Options())
    assert outcome.code == 4 and "does not agree" in outcome.message
    assert world.deployed_mode == "advisory" and world.lock() is None
    fresh, _ = world.cutover()
    again = fresh.rollback(Options())
    assert again.code == 0 and "probes agree" in again.message


def test_a_second_ctrl_c_while_asking_leaves_the_run_recorded(world):
    t = world.clock.now + 5 * 60

    def interrupt() -> None:
        raise KeyboardInterrupt
    world.at(t, interrupt)
    world.at(t + 5, interrupt)  # nobody answered; a second Ctrl-C
    engine, _ = world.cutover(interactive=True, answers="")
    outcome = engine.run(YES)
    assert outcome.state == "interrupted" and world.journal()["state"] == "interrupted"
    assert world.lock()["run_id"] == outcome.run_id


def test_status_says_when_a_runs_process_is_probably_gone(world):
    from tests.test_engine import crash_after

    engine, _ = world.cutover()
    crash_after(engine, "proof")
    with pytest.raises(Crash):
        engine.run(YES)
    world.clock.now += 45 * 60  # a live run would have renewed its lock (every 30 minutes)
    fresh, _ = world.cutover()
    assert "the process is probably gone" in fresh.status().message


def _cdk_deploy_lands_first(world, when: str):
    """A put_parameter fault that, the first time the tool writes the gateway parameter during
    `when` (flip | restore), lets someone else's write land just before it."""
    name = world.cfg.gateway.parameter_name
    state = {"done": False}

    def hook(kwargs):
        j = world.journal() or {}
        phase = "restore" if j.get("state") == "rolling_back" else "flip"
        if kwargs["Name"] == name and phase == when and not state["done"]:
            state["done"] = True
            someone_writes(world, "providers: 7", "providers: 9")
        return None
    return {"ssm": {"put_parameter": [hook] * 200}}


def test_a_write_landing_between_the_flips_read_and_write_is_put_back_and_the_run_stops(world):
    engine, _ = world.cutover(faults=_cdk_deploy_lands_first(world, "flip"))
    outcome = engine.run(YES)
    assert outcome.code == 1 and outcome.state == "changed_under_us" and "changed during the flip" in outcome.message
    value = world.param()["Value"]
    assert "providers: 9" in value and "meshWritesEnforcement: advisory" in value, "their write, byte for byte"
    assert world.rollouts == 0 and world.lock() is None and world.journal()["state"] == "stopped"


def test_a_write_landing_between_the_restores_read_and_write_keeps_their_edit(world):
    t = world.clock.now + 5 * 60
    world.at(t, lambda: world.log(at=t, status=403, caller="brainstorm-cli"))
    engine, _ = world.cutover(faults=_cdk_deploy_lands_first(world, "restore"))
    outcome = engine.run(YES)
    assert outcome.code == 4, outcome.message
    assert world.param()["Value"] == v1(world).replace("providers: 7", "providers: 9"), \
        "the flag went back, their edit stayed"


def test_a_laptop_clock_minutes_behind_does_not_blind_the_watch(world):
    engine, _ = world.cutover()
    engine.clock = engine.lock.clock = lambda: world.clock.now - 5 * 60  # the laptop is 5 minutes slow
    outcome = engine.run(YES)
    assert outcome.code == 0, outcome.message
    assert abs(engine.aws_offset - 300) <= 1, "the watch read the logs on AWS's clock"
